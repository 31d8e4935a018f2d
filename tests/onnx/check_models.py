"""Check every .onnx file in a directory with Debian's python3-onnx (run by tests/onnx/run.sh).

Each file must pass onnx.checker.check_model(model, full_check=True) (which also runs ONNX's
shape inference in strict mode), declare opset 13 of the default domain, name its producer
"neurond", and carry the metadata neurond.kind, neurond.step and neurond.spec (the spec as a
JSON object with the same kind).
"""
import json
import pathlib
import sys

import onnx


def check(path):
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    opsets = {o.domain: o.version for o in model.opset_import}
    assert opsets == {"": 13}, f"opset_import {opsets}"
    assert model.producer_name == "neurond", model.producer_name
    assert model.producer_version, "no producer_version"
    meta = {p.key: p.value for p in model.metadata_props}
    assert set(meta) == {"neurond.kind", "neurond.step", "neurond.spec"}, sorted(meta)
    assert int(meta["neurond.step"]) >= 0
    spec = json.loads(meta["neurond.spec"])
    assert spec["kind"] == meta["neurond.kind"], (spec.get("kind"), meta["neurond.kind"])
    assert [i.name for i in model.graph.input] == ["x"]
    outputs = [o.name for o in model.graph.output]
    assert outputs in (["outputs"], ["outputs", "classes"]), outputs


def main():
    files = sorted(pathlib.Path(sys.argv[1]).glob("*.onnx"))
    if not files:
        print("check_models: no .onnx files to check")
        return 1
    failed = 0
    for f in files:
        try:
            check(f)
            print(f"ok   {f.name}")
        except Exception as e:  # report every file, then fail
            failed += 1
            print(f"FAIL {f.name}: {type(e).__name__}: {e}")
    print(f"check_models: {len(files) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
