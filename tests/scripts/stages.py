"""Test script: three stages with progress, products written through the kit."""

import json
import time
from pathlib import Path

from regio_kit import main, progress, save_product, stage


def run(inp):
    params = inp["params"]
    out = Path(inp["output_dir"])
    for name in ("prepare", "extract", "finish"):
        with stage(name):
            for k in range(1, params["steps"] + 1):
                time.sleep(params["sleep"])
                progress(k, params["steps"])
    (out / "table.txt").write_text(f"label {params['label']}\nsteps {params['steps']}\n")
    save_product(
        out, "table.txt", "table", "The label and the step count", obsid="0001", camera="MOS1"
    )
    (out / "sub").mkdir(exist_ok=True)
    (out / "sub" / "counts.json").write_text(json.dumps({"observations": len(inp["observations"])}))
    save_product(out, "sub/counts.json", "other", "How many observations were given", n=1)
    if params["plot"]:
        (out / "plot.png").write_bytes(b"\x89PNG\r\n\x1a\n")
        save_product(out, "plot.png", "plot", "A placeholder plot")
    print("done: émoji ✓", flush=True)


if __name__ == "__main__":
    main(run)
