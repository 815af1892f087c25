// How far a run is, in words: "stage k of n: name" when the script announced its stage count
// (its manifest's stages, or a [STAGES] n line: the record's stage_count), "stage: name" when not.
// Used by the session page (regio.js) and the runs dashboard (dashboard.js).

export function stageText(run) {
  const k = (run.stages || []).length;
  const n = run.stage_count;
  if (!run.stage) return n ? `starting (${n} stages)` : 'starting';
  return n ? `stage ${k} of ${n}: ${run.stage}` : `stage: ${run.stage}`;
}
