"""The reduction of ``reduce_longslit``: Goodman Live's blocks, each a ``[STAGE]``.

For every selected frame (science or standard) of the input:

1. ``find calibrations``: the frame's own folder is scanned and its calibrations associated
   (``longslit.calibrations``); a missing required calibration (the profile's ``required``)
   fails the run with a message naming it.
2. ``master bias`` and ``master flat`` (``longslit.ccd``), once per set of frames.
3. ``reduce``: overscan, trim, bias, gain, flat, cosmic rays, for the target, its arc and its
   standard.
4. ``trace and extract`` (``longslit.extract``): the target's (and the standard's) trace, sky
   from side windows, boxcar or optimal extraction; the arc along the same trace.
5. ``wavelength calibration`` (``longslit.wavecal``): cross-correlation with the template,
   line-by-line re-identification, Chebyshev fit; or the header's nominal dispersion when asked.
6. ``flux calibration`` (``longslit.fluxcal``), when a standard of the night and its table are
   there (or required by ``flux_calibration = "yes"``).
7. ``write products`` and ``QA plots`` (``longslit.products``).

Reference files (arc template, line lists, extinction curve, the standard's table, a reference
lamp library) are looked up by name in ``reference_dir`` (default: the frame's own folder);
their names default to the profile's. Each one used is recorded with its SHA-256.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from indexer.instruments.longslit import FrameInfo
from longslit import calibrations, ccd, extract, fluxcal, products, wavecal
from regio_kit import ScriptError, progress, save_product, stage
from xmm.provenance import sha256

PROVENANCE_FILE = "provenance.json"


def say(text: str) -> None:
    print(text, flush=True)


@dataclass
class Options:
    extraction: str = "boxcar"
    aperture_width: float = 0.0
    sky_offset: float = 0.0
    sky_width: float = 20.0
    trace_row: float = -1.0
    cosmic_rays: bool = True
    wavelength_solution: str = "fit"
    arc_shift: str = "auto"
    arc_shift_range: float = 60.0
    wavelength_degree: int = 3
    reference_dir: str = ""
    arc_template: str = ""
    line_lists: str = ""
    lamp_library: str = ""
    lamp_mode: str = ""
    lamp_mix: str = ""
    flux_calibration: str = "auto"
    standard_table: str = ""
    extinction: str = ""
    output_medium: str = "reference"
    linear_step: float = 0.0

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Options:
        known = {k: v for k, v in params.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def shift_guess(self) -> float | None:
        text = str(self.arc_shift).strip().lower()
        if text in ("", "auto", "none"):
            return None
        try:
            return float(text)
        except ValueError:
            raise ScriptError(
                f"arc_shift must be 'auto' or a number of pixels, not {self.arc_shift!r}"
            ) from None


@dataclass
class Reduced:
    """A reduced and extracted frame with its wavelength solution."""

    info: FrameInfo
    association: calibrations.Association
    frame: ccd.Frame
    extraction: extract.Extraction
    arc: np.ndarray | None = None
    solution: wavecal.Solution | None = None
    wave: np.ndarray | None = None
    medium: str = "vacuum"
    wave_note: str = ""
    references: list[tuple[str, str]] = field(default_factory=list)  #: (role, path)


class Run:
    """One execution of the script (caches of masters and reductions; provenance)."""

    def __init__(self, inp: dict[str, Any]):
        self.inp = inp
        self.options = Options.from_params(inp.get("params") or {})
        self.output = Path(inp["output_dir"])
        self.biases: dict[tuple, ccd.MasterBias] = {}
        self.flats: dict[tuple, ccd.MasterFlat] = {}
        self.records: list[dict[str, Any]] = []
        self.standards: dict[str, dict[str, Any]] = {}
        self.reduced: dict[Path, Reduced] = {}
        self.created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")

    # -- reference files ---------------------------------------------------------------------

    def reference_dir(self, info: FrameInfo) -> Path:
        text = self.options.reference_dir.strip()
        return Path(text) if text else info.path.parent

    def reference_file(self, info: FrameInfo, name: str, what: str) -> Path:
        path = Path(name)
        if not path.is_absolute():
            path = self.reference_dir(info) / name
        if not path.is_file():
            raise ScriptError(
                f"the {what} {name!r} is not in {self.reference_dir(info)} (reference_dir)"
            )
        return path

    def wavelength_reference(self, info: FrameInfo, arc: FrameInfo) -> wavecal.Reference:
        opts, profile = self.options, info.profile
        if opts.lamp_library.strip():
            library = Path(opts.lamp_library.strip())
            if not library.is_absolute():
                library = self.reference_dir(info) / library
            with fits.open(arc.path) as hdul:
                header = hdul[0].header
            mode = opts.lamp_mode.strip() or str(header.get("WAVMODE", "")).strip()
            lamps = (
                opts.lamp_mix.strip()
                or wavecal.lamp_mix(header)
                or "+".join(profile.arc_lamps_on(header))
            )
            try:
                return wavecal.library_reference(library, mode or "?", lamps or "?")
            except wavecal.ReferenceError as exc:
                raise ScriptError(str(exc)) from None
        template = opts.arc_template.strip() or profile.arc_template
        names = [n.strip() for n in opts.line_lists.split(",") if n.strip()] or list(
            profile.line_lists
        )
        if not template or not names:
            raise ScriptError(
                f"no arc template or line list for {profile.key} (lamps "
                f"{'+'.join(profile.arc_lamps_on(fits.getheader(arc.path))) or '?'}): give "
                "arc_template and line_lists, or a lamp_library, or wavelength_solution='nominal'"
            )
        files = [self.reference_file(info, template, "arc template")] + [
            self.reference_file(info, n, "line list") for n in names
        ]
        try:
            return wavecal.template_reference(files[0], files[1:], profile.wavelengths)
        except wavecal.ReferenceError as exc:
            raise ScriptError(str(exc)) from None

    # -- masters ---------------------------------------------------------------------------

    def master_bias(self, association) -> ccd.MasterBias | None:
        if not association.bias:
            return None
        key = tuple(sorted(str(f.path) for f in association.bias))
        if key not in self.biases:
            master = ccd.master_bias(association.bias)
            self.biases[key] = master
            means = ", ".join(f"{m:+.2f}" for m in master.amp_means)
            say(
                f"master bias of {len(association.bias)} frames "
                f"({', '.join(f.name for f in association.bias)}): mean per amplifier after "
                f"the overscan {means} ADU"
            )
        return self.biases[key]

    def master_flat(self, association, bias) -> ccd.MasterFlat | None:
        if not association.flat:
            return None
        key = tuple(sorted(str(f.path) for f in association.flat)) + (id(bias),)
        if key not in self.flats:
            master = ccd.master_flat(association.flat, bias)
            self.flats[key] = master
            say(
                f"normalised flat of {len(association.flat)} frames "
                f"({', '.join(f.name for f in association.flat)}): "
                f"{100 * master.low.mean():.1f}% of the pixels not trusted (slit ends, faint lamp)"
            )
        return self.flats[key]


# --- stages ------------------------------------------------------------------------------------


def _targets(inp: dict[str, Any]) -> list[Path]:
    selected = inp.get("observations") or []
    if not selected:
        raise ScriptError("no observation was selected")
    paths = []
    for obs in selected:
        path = obs.get("path")
        if not path:
            raise ScriptError(f"observation {obs.get('obsid', '?')} has no file path")
        if not Path(path).is_file():
            raise ScriptError(f"the frame {path} of {obs.get('obsid', '?')} is missing")
        paths.append(Path(path))
    return paths


def run(inp: dict[str, Any]) -> None:
    state = Run(inp)
    opts = state.options
    paths = _targets(inp)
    with stage("find calibrations"):
        associations = []
        for k, path in enumerate(paths, 1):
            association = calibrations.for_frame(path)
            target = association.target
            say(
                f"{target.name}: {target.classification.text()}, {target.profile.title} "
                f"{target.profile.camera}, night {target.night}"
            )
            for decision in association.decisions:
                say(f"  {decision.text()}")
            if target.type not in ("science", "standard"):
                raise ScriptError(f"{target.name} is a {target.type} frame, not a sky exposure")
            required = _required(target, opts)
            if opts.flux_calibration == "yes":
                required += ("standard",)
            try:
                association.require(required)
            except calibrations.AssociationError as exc:
                raise ScriptError(str(exc)) from None
            if opts.wavelength_solution == "fit":
                # the reference files are checked now, not after the long stages
                state.wavelength_reference(target, association.arc)
            elif association.arc is not None:
                decision = next(d for d in association.decisions if d.used_as == "arc")
                decision.used_as = None
                decision.reasons.append("not used: wavelength_solution = nominal")
                association.arc = None
            for role in ("bias", "flat"):
                if role in association.missing((role,)):
                    say(f"[WARNING] {target.name}: no {role} of the same night and setup: "
                        "reduced without")  # fmt: skip
            associations.append(association)
            progress(k, len(paths))
    with stage("master bias"):
        for k, association in enumerate(associations, 1):
            state.master_bias(association)
            progress(k, len(associations))
    with stage("master flat"):
        for k, association in enumerate(associations, 1):
            state.master_flat(association, state.master_bias(association))
            progress(k, len(associations))
    reduced: dict[Path, Reduced] = state.reduced
    standards: dict[Path, calibrations.Association] = {}
    with stage("reduce"):
        todo: list[calibrations.Association] = []
        for association in associations:
            todo.append(association)
            std = association.standard
            if std is None or std.path == association.target.path:
                continue  # no standard, or the target is its own standard
            if opts.flux_calibration == "no":
                association.standard = None
                continue
            if std.path in standards:
                continue
            std_association = calibrations.for_frame(std.path)
            try:
                std_association.require(_required(std_association.target, opts))
            except calibrations.AssociationError as exc:
                if opts.flux_calibration == "yes":
                    raise ScriptError(f"the standard {std.name}: {exc}") from None
                say(f"[WARNING] the standard {std.name} cannot be reduced: {exc}")
                association.standard = None
                continue
            standards[std.path] = std_association
            todo.append(std_association)
        frames = {}
        for k, association in enumerate(todo, 1):
            target = association.target
            if target.path not in frames:
                bias = state.master_bias(association)
                flat = state.master_flat(association, bias)
                frame = ccd.process(target, bias, flat, cosmic_rays=opts.cosmic_rays)
                for note in frame.notes:
                    say(f"{target.name}: {note}")
                frames[target.path] = frame
            progress(k, len(todo))
    with stage("trace and extract"):
        for k, association in enumerate(todo, 1):
            target = association.target
            if target.path in reduced:
                continue
            reduced[target.path] = trace_and_extract(state, association, frames[target.path])
            progress(k, len(todo))
    with stage("wavelength calibration"):
        for k, item in enumerate(reduced.values(), 1):
            wavelength_calibration(state, item)
            progress(k, len(reduced))
    sensitivities: dict[Path, fluxcal.Sensitivity | None] = {}
    results = []
    with stage("flux calibration"):
        for k, association in enumerate(associations, 1):
            item = reduced[association.target.path]
            results.append(flux_calibration(state, item, reduced, sensitivities))
            progress(k, len(associations))
    with stage("write products"):
        for k, (item, flux) in enumerate(
            zip(reduced_for(associations, reduced), results, strict=True), 1
        ):
            write_products(state, item, flux)
            progress(k, len(associations))
        state_path = state.output / PROVENANCE_FILE
        state_path.write_text(json.dumps(provenance(state), indent=1, default=str), "utf-8")
        save_product(state.output, PROVENANCE_FILE, "other", "Provenance of the reduction")
    with stage("QA plots"):
        for k, (item, flux) in enumerate(
            zip(reduced_for(associations, reduced), results, strict=True), 1
        ):
            qa_plots(state, item, flux)
            progress(k, len(associations))


def _required(target: FrameInfo, opts: Options) -> tuple[str, ...]:
    """The calibrations a frame's reduction cannot do without."""
    required = tuple(target.profile.required)
    if opts.wavelength_solution == "nominal":
        required = tuple(r for r in required if r != "arc")
    return required


def reduced_for(associations, reduced) -> list[Reduced]:
    return [reduced[a.target.path] for a in associations]


def trace_and_extract(state: Run, association, frame: ccd.Frame) -> Reduced:
    opts = state.options
    target = association.target
    guess = opts.trace_row if opts.trace_row >= 0 else None
    try:
        trace, fwhm = extract.trace_object(frame, guess=guess)
        extraction = extract.extract(
            frame,
            trace,
            fwhm,
            width=opts.aperture_width or None,
            sky_offset=opts.sky_offset or None,
            sky_width=opts.sky_width,
            optimal=opts.extraction == "optimal",
        )
    except extract.ExtractionError as exc:
        raise ScriptError(f"{target.name}: {exc}") from None
    middle = extraction.trace[len(extraction.trace) // 2]
    say(
        f"{target.name}: trace at row {middle:.1f} in the middle column (rows "
        f"{extraction.trace.min():.1f}-{extraction.trace.max():.1f}; FITS rows are +1), FWHM "
        f"{extraction.fwhm:.1f} pixels; {extraction.method} aperture {extraction.width:.1f} "
        f"rows, sky {extraction.sky_width:g} rows at +-{extraction.sky_offset:.1f}"
    )
    item = Reduced(info=target, association=association, frame=frame, extraction=extraction)
    if association.arc is not None:
        arc_frame = ccd.process(
            association.arc, state.master_bias(association), None, cosmic_rays=False
        )
        item.arc = extract.arc_spectrum(arc_frame, extraction.trace, extraction.width)
    return item


def wavelength_calibration(state: Run, item: Reduced) -> None:
    opts, target = state.options, item.info
    profile = target.profile
    npix = item.extraction.flux.size
    if opts.wavelength_solution == "nominal" or item.arc is None:
        header = item.frame.header
        nominal = profile.nominal(header)
        if nominal is None:
            raise ScriptError(
                f"{target.name}: no arc and no nominal dispersion in the header "
                f"({profile.nominal_start}, {profile.nominal_dispersion})"
            )
        start, step = nominal
        item.wave = start + step * np.arange(npix)
        item.medium = profile.wavelengths
        item.wave_note = f"nominal: {start:g} A + {step:g} A/pixel from the header (no arc fit)"
        say(f"[WARNING] {target.name}: wavelengths {item.wave_note}")
        return
    reference = state.wavelength_reference(target, item.association.arc)
    try:
        solution = wavecal.calibrate(
            item.arc,
            reference,
            shift=opts.shift_guess(),
            max_shift=opts.arc_shift_range,
            degree=opts.wavelength_degree,
        )
    except wavecal.CalibrationError as exc:
        raise ScriptError(f"{target.name}: arc {item.association.arc.name}: {exc}") from None
    item.solution = solution
    item.wave = solution.wavelengths()
    item.medium = reference.medium
    item.references = [
        ("template" if i == 0 else "linelist", f) for i, f in enumerate(reference.files)
    ]
    if reference.relative:
        item.references = [("reference lamp", reference.files[0])]
    used = solution.wave[solution.used]
    say(
        f"{target.name}: arc {item.association.arc.name} against {reference.name}: lag "
        f"{solution.shift:.2f} pixels, {solution.nlines} lines over {used.min():.1f}-"
        f"{used.max():.1f} A, Chebyshev degree {solution.degree}, RMS "
        f"{solution.rms_angstrom:.4f} A = {solution.rms_pixels:.4f} pixel; "
        f"{item.wave[0]:.1f}-{item.wave[-1]:.1f} A ({reference.medium})"
    )


def flux_calibration(state, item: Reduced, reduced, sensitivities) -> dict[str, Any]:
    """Flux, error, mask and unit of a target (flux calibrated when possible)."""
    opts, target = state.options, item.info
    exptime = target.exptime or 1.0
    rate, dispersion = fluxcal.counts_per_angstrom(item.wave, item.extraction.flux, exptime)
    rate_err = item.extraction.error / exptime / dispersion
    out = {
        "flux": rate,
        "error": rate_err,
        "mask": item.extraction.mask.copy(),
        "unit": "electron / (s Angstrom)",
        "fluxcal": "none",
        "sensitivity": None,
        "extinction": None,
        "table": None,
        "standard": None,
    }
    std = item.association.standard
    if opts.flux_calibration == "no":
        say(f"{target.name}: not flux calibrated (flux_calibration = no)")
        return out
    if std is None:
        say(
            f"[WARNING] {target.name}: no standard of the same night and setup: not flux calibrated"
        )
        return out
    std_item = reduced[std.path]
    if std.path not in sensitivities:
        sensitivities[std.path] = standard_sensitivity(state, std_item)
    sens = sensitivities[std.path]
    if sens is None:
        if opts.flux_calibration == "yes":
            raise ScriptError(f"{target.name}: no sensitivity function from {std.name}")
        return out
    sens_obj, extinction, table = sens
    airmass = target.airmass if target.airmass is not None else 1.0
    flux, error, bits = fluxcal.apply(item.wave, rate, rate_err, airmass, sens_obj, extinction)
    out.update(
        flux=flux,
        error=error,
        mask=out["mask"] | bits,
        unit=fluxcal.FLAM,
        fluxcal="standard",
        sensitivity=sens_obj,
        extinction=extinction.path,
        table=table.path,
        standard=std,
    )
    say(
        f"{target.name}: flux calibrated with {std.name} ({std.object}, airmass "
        f"{std.airmass}), table {Path(table.path).name}, extinction "
        f"{Path(extinction.path).name}, target airmass {airmass:g}; sensitivity "
        f"{sens_obj.low:.0f}-{sens_obj.high:.0f} A, fit RMS {100 * sens_obj.rms:.1f}%"
    )
    return out


def standard_sensitivity(state: Run, std_item: Reduced):
    opts, std = state.options, std_item.info
    profile = std.profile
    try:
        name = opts.standard_table.strip()
        if name:
            table_path = state.reference_file(std, name, "standard's table")
        else:
            table_path = None
            for candidate in fluxcal.find_tables(state.reference_dir(std), std.object or ""):
                try:
                    fluxcal.read_standard(candidate)
                except fluxcal.FluxError:
                    continue
                table_path = candidate
                break
            if table_path is None:
                raise ScriptError(
                    f"no table of the standard {std.object!r} in {state.reference_dir(std)}: "
                    "give standard_table"
                )
        ext_name = opts.extinction.strip() or profile.extinction
        if not ext_name:
            raise ScriptError(f"no extinction curve for {profile.key}: give extinction")
        ext_path = state.reference_file(std, ext_name, "extinction curve")
        table = fluxcal.read_standard(table_path)
        extinction = fluxcal.read_extinction(ext_path)
        rate, _ = fluxcal.counts_per_angstrom(
            std_item.wave, std_item.extraction.flux, std.exptime or 1.0
        )
        good = std_item.extraction.mask == 0
        sens = fluxcal.sensitivity(
            std_item.wave,
            rate,
            std.airmass if std.airmass is not None else 1.0,
            table,
            extinction,
            std_item.medium,
            good=good | (std_item.extraction.mask == ccd.MASK_CR),
        )
    except (ScriptError, fluxcal.FluxError) as exc:
        if opts.flux_calibration == "yes":
            raise ScriptError(str(exc)) from None
        say(f"[WARNING] {std.name}: no sensitivity function: {exc}")
        return None
    return sens, extinction, table


def _output_wave(state: Run, item: Reduced) -> tuple[np.ndarray, str]:
    medium = item.medium
    wanted = state.options.output_medium
    wave = item.wave
    if wanted in ("air", "vacuum") and wanted != medium:
        wave = fluxcal.vacuum_to_air(wave) if wanted == "air" else fluxcal.air_to_vacuum(wave)
        medium = wanted
    return wave, medium


def _stem(item: Reduced) -> str:
    info = item.info
    name = info.name.split(".")[0]
    return f"{info.profile.camera.lower()}_{name}"


def fits_header(state: Run, item: Reduced, flux: dict[str, Any], medium: str) -> fits.Header:
    info, ext, sol = item.info, item.extraction, item.solution
    cards: list[tuple[str, Any, str]] = [
        ("OBJECT", info.object or "", "object name"),
        ("DATE-OBS", info.date_obs.isoformat(timespec="seconds") if info.date_obs else "", ""),
        ("MJD-OBS", _mjd(info.date_obs), "[d] MJD of DATE-OBS"),
        ("EXPTIME", info.exptime or 0.0, "[s] exposure time"),
        ("AIRMASS", info.airmass if info.airmass is not None else 0.0, "airmass"),
        ("INSTRUME", f"{info.profile.instrument} {info.profile.camera}", "spectrograph"),
        ("PROFILE", info.profile.key, "Regio long-slit profile"),
        ("FRAMETYP", info.type, "frame type (Regio classification)"),
        ("AIRORVAC", "air" if medium == "air" else "vac", "wavelengths in air or vacuum"),
        ("EXTRACT", ext.method, "extraction"),
        ("APWIDTH", round(float(ext.width), 3), "[pixel] aperture width"),
        (
            "TRACEROW",
            round(float(ext.trace[len(ext.trace) // 2]), 3),
            "trace row, middle column (0-based)",
        ),
        ("SKYOFF", round(float(ext.sky_offset), 3), "[pixel] sky windows' distance"),
        ("SKYWIDTH", float(ext.sky_width), "[pixel] sky windows' width"),
        ("FLUXCAL", flux["fluxcal"], "flux calibration (standard / none)"),
        ("BUNIT", flux["unit"], "flux unit"),
        ("CREATOR", f"Regio reduce_longslit {state.inp.get('script', {}).get('version', '')}", ""),
        ("REGIORUN", str(state.inp.get("run_id", "")), "Regio run id"),
        ("DATE", state.created, "file creation date (UTC)"),
    ]
    if sol is not None:
        cards += [
            ("WAVECAL", "arc", "wavelength solution from the arc"),
            ("WAVE_RMS", round(sol.rms_angstrom, 5), "[Angstrom] RMS of the arc lines"),
            ("WAVERMSP", round(sol.rms_pixels, 5), "[pixel] RMS of the arc lines"),
            ("NLINES", sol.nlines, "arc lines in the fit"),
            ("ARCTEMPL", sol.reference, "arc template / reference lamp"),
            ("ARCLAG", round(sol.shift, 3), "[pixel] cross-correlation lag"),
            ("WAVEDEG", sol.degree, "Chebyshev degree of the solution"),
        ]
    else:
        cards += [("WAVECAL", "nominal", item.wave_note[:60])]
    if flux["sensitivity"] is not None:
        cards += [
            ("SENSSTD", flux["standard"].name, "standard frame of the sensitivity"),
            ("SENSRMS", round(flux["sensitivity"].rms, 5), "sensitivity fit RMS (fraction)"),
        ]
    inputs = [(role, f.name, f.date_obs) for role, f in item.association.used()]
    if flux["standard"] is not None and all(n != flux["standard"].name for _, n, _ in inputs):
        inputs.append(("standard", flux["standard"].name, flux["standard"].date_obs))
    for role, path in item.references:
        inputs.append((role, Path(path).name, None))
    if flux["table"]:
        inputs.append(("standard table", Path(flux["table"]).name, None))
    if flux["extinction"]:
        inputs.append(("extinction", Path(flux["extinction"]).name, None))
    for n, (role, name, date) in enumerate(inputs, 1):
        cards.append((f"INFILE{n:02d}", name, "input file"))
        cards.append((f"INROLE{n:02d}", role, "its role"))
        cards.append(
            (f"INDATE{n:02d}", date.isoformat(timespec="seconds") if date else "", "its DATE-OBS")
        )
    for key, value in products.package_versions().items():
        cards.append((key, value, f"{products.PACKAGES[key]} version"))
    for note in item.frame.notes:
        cards.append(("HISTORY", note, ""))
    cards.append(
        ("HISTORY", "parameters: " + json.dumps(state.inp.get("params", {}), sort_keys=True), "")
    )
    return products.header_cards(cards)


def _mjd(date: dt.datetime | None) -> float:
    if date is None:
        return 0.0
    return round((date - dt.datetime(1858, 11, 17)) / dt.timedelta(days=1), 8)


def write_products(state: Run, item: Reduced, flux: dict[str, Any]) -> None:
    wave, medium = _output_wave(state, item)
    stem = _stem(item)
    header = fits_header(state, item, flux, medium)
    lines = wavecal.table_rows(item.solution) if item.solution is not None else None
    meta = {"obsid": None, "camera": item.info.profile.camera}
    for obs in state.inp.get("observations") or []:
        if Path(obs.get("path", "")).resolve() == item.info.path.resolve():
            meta["obsid"] = obs.get("obsid")
    spec = products.write_spec1d(
        state.output / f"{stem}_spec1d.fits",
        wave,
        flux["flux"],
        flux["error"],
        flux["mask"],
        flux["unit"],
        header,
        lines,
    )
    save_product(
        state.output,
        spec.name,
        "spectrum",
        f"1-D spectrum of {item.info.object} ({item.info.name}): WAVE, FLUX, ERR, MASK",
        **meta,
    )
    grid = products.linear_grid(wave, state.options.linear_step or None)
    lin_flux, lin_err, lin_mask = products.resample(
        wave, flux["flux"], flux["error"], flux["mask"], grid
    )
    linear = products.write_linear(
        state.output / f"{stem}_linear.fits",
        grid,
        lin_flux,
        lin_err,
        lin_mask,
        flux["unit"],
        header,
    )
    save_product(
        state.output,
        linear.name,
        "spectrum",
        f"Linearised 1-D spectrum of {item.info.object}: CRVAL1 {grid[0]:.2f} A, CDELT1 "
        f"{grid[1] - grid[0]:.4f} A",
        **meta,
    )
    state.records.append(record(state, item, flux, medium, [spec.name, linear.name]))
    standard = flux["standard"]
    if standard is not None and standard.path != item.info.path:
        state.standards.setdefault(
            str(standard.path), standard_record(state.reduced[standard.path])
        )


def qa_plots(state: Run, item: Reduced, flux: dict[str, Any]) -> None:
    stem = _stem(item)
    meta = {"camera": item.info.profile.camera}
    title = f"{item.info.name} {item.info.object}"
    path = products.plot_trace(
        state.output / f"{stem}_trace.png", item.frame.data, item.extraction, title
    )
    save_product(
        state.output,
        path.name,
        "plot",
        f"Trace, aperture and sky windows on {item.info.name}",
        **meta,
    )
    if item.solution is not None:
        path = products.plot_arc(
            state.output / f"{stem}_arc.png",
            item.arc,
            item.solution,
            f"arc {item.association.arc.name} for {item.info.name}",
        )
        save_product(
            state.output, path.name, "plot", "Arc lines and wavelength-fit residuals", **meta
        )
    wave, _ = _output_wave(state, item)
    path = products.plot_spectrum(
        state.output / f"{stem}_spectrum.png",
        wave,
        flux["flux"],
        flux["error"],
        flux["unit"],
        title,
    )
    save_product(state.output, path.name, "plot", f"Spectrum of {item.info.object}", **meta)


def record(state: Run, item: Reduced, flux, medium, files) -> dict[str, Any]:
    sol = item.solution
    inputs = []
    for role, frame in item.association.used():
        inputs.append(
            {
                "role": role,
                "file": str(frame.path),
                "date_obs": frame.date_obs.isoformat(timespec="seconds")
                if frame.date_obs
                else None,
                "type": frame.classification.text(),
                "sha256": sha256(frame.path),
            }
        )
    references = [
        {"role": role, "file": str(p), "sha256": sha256(p)} for role, p in item.references
    ]
    for role, key in (("standard table", "table"), ("extinction", "extinction")):
        if flux[key]:
            references.append({"role": role, "file": flux[key], "sha256": sha256(flux[key])})
    return {
        "target": str(item.info.path),
        "products": files,
        "classification": item.info.classification.text(),
        "night": str(item.info.night),
        "setup": item.info.setup,
        "association": [d.to_json() for d in item.association.decisions],
        "inputs": inputs,
        "references": references,
        "notes": item.frame.notes,
        "trace": {
            "row_middle": float(item.extraction.trace[len(item.extraction.trace) // 2]),
            "fwhm": item.extraction.fwhm,
            "method": item.extraction.method,
            "width": item.extraction.width,
            "sky_offset": item.extraction.sky_offset,
            "sky_width": item.extraction.sky_width,
        },
        "wavelength": (
            {
                "reference": sol.reference,
                "medium": medium,
                "lag": sol.shift,
                "nlines": sol.nlines,
                "rms_angstrom": sol.rms_angstrom,
                "rms_pixels": sol.rms_pixels,
                "degree": sol.degree,
            }
            if sol is not None
            else {"nominal": item.wave_note, "medium": medium}
        ),
        "flux_calibration": {
            "standard": str(flux["standard"].path) if flux["standard"] else None,
            "unit": flux["unit"],
            "sensitivity_rms": flux["sensitivity"].rms if flux["sensitivity"] else None,
        },
    }


def standard_record(item: Reduced) -> dict[str, Any]:
    """What the standard behind a sensitivity function was reduced with."""
    sol = item.solution
    return {
        "frame": str(item.info.path),
        "object": item.info.object,
        "airmass": item.info.airmass,
        "inputs": [
            {
                "role": role,
                "file": str(frame.path),
                "date_obs": frame.date_obs.isoformat(timespec="seconds")
                if frame.date_obs
                else None,
                "sha256": sha256(frame.path),
            }
            for role, frame in item.association.used()
        ],
        "association": [d.to_json() for d in item.association.decisions],
        "trace_row_middle": float(item.extraction.trace[len(item.extraction.trace) // 2]),
        "wavelength": (
            {"nlines": sol.nlines, "rms_angstrom": sol.rms_angstrom, "lag": sol.shift}
            if sol is not None
            else {"nominal": item.wave_note}
        ),
    }


def provenance(state: Run) -> dict[str, Any]:
    return {
        "regio_version": state.inp.get("regio_version"),
        "script": state.inp.get("script"),
        "run_id": state.inp.get("run_id"),
        "created": state.created + "Z",
        "parameters": state.inp.get("params", {}),
        "software": {products.PACKAGES[k]: v for k, v in products.package_versions().items()},
        "reductions": state.records,
        "standards": list(state.standards.values()),
    }
