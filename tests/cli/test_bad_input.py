"""The bad-input corpus (issue 13): each case runs the CLI as a user does (the console script, in a subprocess) and
asserts the exit code, no traceback, the file/field/value named in one line, no user file lost, and that no
half-written or tampered bundle verifies.

Classes: checkpoint, samples, options, bundle tampering, filesystem faults (tmpfs: disk full, read-only, mount
point), signals, concurrency. Random bytes to flip and fields to edit are drawn afresh each run; the seed is
printed (EDGEKIT_BAD_INPUT_SEED=N reruns one draw).
"""

from __future__ import annotations

import json
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest

from corpus import ASSET, EDGEKIT, MANIFEST, SEED, cli, edit_manifest, one_line_error, refused_everywhere, rng_for


def setup_module(module):
    print(f"\nbad-input corpus seed: {SEED} (EDGEKIT_BAD_INPUT_SEED={SEED} reruns this draw)")


# ---- checkpoint ---------------------------------------------------------------------------------------------


def _write_config(ckpt: Path, edit) -> None:
    cfg = json.loads((ckpt / "config.json").read_text())
    new = edit(cfg)
    (ckpt / "config.json").write_text(json.dumps(cfg if new is None else new))


@pytest.mark.parametrize(
    "case,edit,needle",
    [
        ("not-an-object", lambda c: [1, 2, 3], "must hold a JSON object"),
        ("zero-heads", lambda c: c.update(num_attention_heads=0), "'num_attention_heads' is 0"),
        ("string-hidden", lambda c: c.update(hidden_size="4096"), "'hidden_size' is '4096'"),
        ("fraction-layers", lambda c: c.update(num_hidden_layers=1.5), "'num_hidden_layers' is 1.5"),
        ("zero-vision-heads", lambda c: c["vision_config"].update(num_heads=0), "'num_heads' is 0"),
        (
            "wrong-architecture",
            lambda c: c.update(architectures=["LlamaForCausalLM"], model_type="llama"),
            "unsupported architecture LlamaForCausalLM",
        ),
    ],
)
def test_bad_config_json(ckpt, case, edit, needle):
    _write_config(ckpt, edit)
    for cmd in (["inspect", ckpt], ["build", ckpt, "--out", ckpt.parent / "out"]):
        one_line_error(cli(*cmd), 2, "config.json", needle)
    assert not (ckpt.parent / "out").exists()


def test_config_json_not_json(ckpt):
    (ckpt / "config.json").write_text("{ this is not json")
    one_line_error(cli("plan", ckpt), 2, "config.json", "not valid JSON")


def test_corrupt_tokenizer_json(ckpt):
    data = (ckpt / "tokenizer.json").read_bytes()
    (ckpt / "tokenizer.json").write_bytes(data[: len(data) // 2])
    one_line_error(
        cli("build", ckpt, "--out", ckpt.parent / "out"),
        2,
        "tokenizer.json",
        "not valid JSON",
        "copy tokenizer.json again",
    )


def _rewrite_header(path: Path, edit) -> None:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    new = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])


def test_overlapping_safetensors_offsets(ckpt):
    def overlap(h):
        same = [k for k, v in h.items() if k != "__metadata__" and v["shape"] == [512] and v["dtype"] == "BF16"]
        h[same[1]]["data_offsets"] = list(h[same[0]]["data_offsets"])

    _rewrite_header(ckpt / "model.safetensors", overlap)
    one_line_error(cli("inspect", ckpt), 2, "model.safetensors", "overlap")


def test_truncated_safetensors(ckpt):
    f = ckpt / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-1000])
    one_line_error(cli("inspect", ckpt), 2, "model.safetensors", "truncated")


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_nonfinite_weight_is_named(ckpt, value):
    from safetensors.torch import load_file, save_file

    rng = rng_for(f"nonfinite-{value}")
    tensors = load_file(str(ckpt / "model.safetensors"))
    name = rng.choice(sorted(n for n in tensors if n.startswith("model.layers.") and n.endswith("proj.weight")))
    t = tensors[name].clone()
    flat = t.view(-1)
    hits = rng.sample(range(flat.numel()), 3)
    flat[hits] = float(value)
    tensors[name] = t
    save_file(tensors, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    out = ckpt.parent / "out"
    one_line_error(cli("build", ckpt, "--out", out), 2, f"tensor '{name}' has 3 NaN/Inf", "--allow-nonfinite")
    assert not out.exists() or not (out / MANIFEST).exists()


def test_pickle_weights_refused(ckpt):
    (ckpt / "model.safetensors").rename(ckpt / "pytorch_model.bin")
    one_line_error(cli("inspect", ckpt), 2, "pytorch_model.bin", "pickle")


def test_missing_checkpoint_directory(tmp_path):
    one_line_error(cli("build", tmp_path / "nope", "--out", tmp_path / "o"), 2, "nope", "not found")


# ---- samples -------------------------------------------------------------------------------------------------


def test_malformed_sample_line_named_before_work(tiny_ckpt, tmp_path):
    bad = tmp_path / "s.jsonl"
    bad.write_text('{"id": "a", "domain": "driving"}\n{not json}\n')
    out = tmp_path / "o"
    one_line_error(cli("build", tiny_ckpt, "--method", "gptq", "--samples", bad, "--out", out), 2, "s.jsonl")
    assert not out.exists() and not out.with_name("o.partial").exists()


def test_missing_samples_file(tiny_ckpt, tmp_path):
    one_line_error(
        cli("build", tiny_ckpt, "--method", "awq", "--samples", tmp_path / "none.jsonl", "--out", tmp_path / "o"),
        2,
        "none.jsonl",
        "no such sample file",
    )


def test_sample_file_not_utf8(tmp_path):
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"id": "caf\xe9"}\n')
    one_line_error(cli("samples", "check", bad), 2, "latin1.jsonl")


# ---- options ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "opts,needle",
    [
        (["--context", "-5"], "--context"),
        (["--context", "0"], "--context"),
        (["--images", "0"], "--images"),
        (["--calib-n", "0"], "--calib-n"),
        (["--resolution", "0x448"], "--resolution"),
        (["--resolution", "wide"], "--resolution 'wide'"),
        (["--gguf-type", "q9_9"], "--gguf-type 'q9_9'"),
        (["--precision", "int3"], "int3"),
        (["--method", "magic"], "--method 'magic'"),
        (["--target", "nowhere"], "unknown target 'nowhere'"),
        (["--context", "1000000"], "max_position_embeddings is 32768"),
        (["--resolution", "20x20"], "at least 28 px"),
    ],
)
def test_nonsense_build_options_refused_before_work(tiny_ckpt, tmp_path, opts, needle):
    out = tmp_path / "o"
    one_line_error(cli("build", tiny_ckpt, *opts, "--out", out), 2, needle)
    assert not out.exists() and not out.with_name("o.partial").exists()


def test_negative_max_new_tokens(bundle):
    one_line_error(cli("run", "--bundle", bundle, "--image", ASSET, "--max-new-tokens", "-3"), 2, "--max-new-tokens")


def test_prompt_not_utf8(bundle):
    one_line_error(
        cli("run", "--bundle", bundle, "--image", ASSET, "--prompt", b"caf\xe9 \xff"), 2, "--prompt", "UTF-8"
    )


def test_decompression_bomb_image(bundle, tmp_path):
    from PIL import Image

    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 10000)).save(bomb)  # 200 Mpixel, a few kB on disk
    one_line_error(cli("run", "--bundle", bundle, "--image", bomb), 2, "bomb.png", "too large")


def test_extreme_aspect_ratio_in_reference_pipeline(tiny_ckpt, tmp_path):
    from PIL import Image

    strip = tmp_path / "strip.png"
    Image.new("RGB", (4200, 20)).save(strip)
    one_line_error(cli("run", tiny_ckpt, "--image", strip, "--max-new-tokens", "2"), 2, "4200x20", "aspect ratio")


def test_export_decoder_out_is_a_directory(tiny_ckpt, tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep.txt").write_text("mine")
    one_line_error(cli("export-decoder", tiny_ckpt, "--out", tmp_path / "d"), 2, "is a directory")
    assert (tmp_path / "d" / "keep.txt").read_text() == "mine"


# ---- filesystem: nothing of the user's is lost -----------------------------------------------------------------


def test_build_never_deletes_user_files(tiny_ckpt, tmp_path):
    user = tmp_path / "u"
    user.mkdir()
    (user / "thesis.txt").write_text("years of work")
    one_line_error(cli("build", tiny_ckpt, "--out", user), 2, "--out", "not an edgekit bundle", "thesis.txt")
    assert (user / "thesis.txt").read_text() == "years of work"


def test_build_leaves_unrelated_old_and_partial_alone(tiny_ckpt, tmp_path):
    out = tmp_path / "b"
    for sibling in ("b.old", "b.partial"):
        (tmp_path / sibling).mkdir()
        (tmp_path / sibling / "mine.txt").write_text(sibling)
    one_line_error(cli("build", tiny_ckpt, "--out", out), 2, "b.partial", "not made by edgekit build")
    shutil.rmtree(tmp_path / "b.partial")
    proc = cli("build", tiny_ckpt, "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "b.old" / "mine.txt").read_text() == "b.old"
    assert cli("verify", out).returncode == 0 and not (tmp_path / "b.partial").exists()


def test_out_is_a_file(tiny_ckpt, tmp_path):
    (tmp_path / "f").write_text("data")
    one_line_error(cli("build", tiny_ckpt, "--out", tmp_path / "f"), 2, "exists and is not a directory")
    assert (tmp_path / "f").read_text() == "data"


def test_rebuild_into_a_bundle_keeps_a_users_extra_file_safe(bundle, tiny_ckpt, tmp_path):
    """A bundle with a user's file added is no longer only edgekit's: refused, the file kept."""
    b = Path(shutil.copytree(bundle, tmp_path / "b"))
    (b / "notes.txt").write_text("mine")
    one_line_error(cli("build", tiny_ckpt, "--out", b), 2, "not an edgekit bundle", "notes.txt")
    assert (b / "notes.txt").read_text() == "mine"


def test_disk_full_while_writing_gguf(tiny_ckpt, tmpfs):
    small = tmpfs("small", "2m")
    one_line_error(
        cli("export-decoder", tiny_ckpt, "--precision", "f32", "--out", small / "d.gguf"),
        2,
        "d.gguf",
        "no space left on device",
    )
    assert list(small.iterdir()) == [], "a partial GGUF was left behind"


def test_disk_full_during_build_then_resume_elsewhere(tiny_ckpt, tmpfs, tmp_path):
    small = tmpfs("small", "3m")
    one_line_error(cli("build", tiny_ckpt, "--out", small / "b"), 2, "no space left on device")
    assert not (small / "b" / MANIFEST).exists()


def test_read_only_out(tiny_ckpt, tmpfs):
    ro = tmpfs("ro", "1m", readonly=True)
    one_line_error(cli("build", tiny_ckpt, "--out", ro / "b"), 2, "not writable")
    one_line_error(cli("export-decoder", tiny_ckpt, "--out", ro / "d.gguf"), 2, "d.gguf", "cannot write")


def test_mount_point_out(tiny_ckpt, tmpfs):
    mnt = tmpfs("mnt", "1m")
    one_line_error(cli("build", tiny_ckpt, "--out", mnt), 2, "is a mount point")


# ---- bundle tampering: nothing loaded from outside ---------------------------------------------------------------


def test_flipped_byte_in_a_random_artifact(copy):
    rng = rng_for("flip")
    artifacts = sorted(json.loads((copy / MANIFEST).read_text())["artifacts"])
    rel = rng.choice(artifacts)
    data = bytearray((copy / rel).read_bytes())
    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    (copy / rel).write_bytes(bytes(data))
    refused_everywhere(copy, rel)


FIELD_EDITS = {  # JSON pointer of the field named -> the edit
    "/context": lambda m: m.update(context=m["context"] * 2),
    "/preprocessing/image_mean": lambda m: m["preprocessing"].update(image_mean=[0.0, 0.0, 0.0]),
    "/model/token_ids": lambda m: m["model"]["token_ids"].update(image=m["model"]["token_ids"]["image"] + 1),
    "/parts/vision": lambda m: m["parts"]["vision"].update(resolution=[224, 224]),
    "/parts/decoder": lambda m: m["parts"]["decoder"].update(path="decoder/mmproj.gguf"),
    "/tokenizer_dir": lambda m: m.update(tokenizer_dir="decoder"),
}


def test_edited_manifest_field_is_named(copy):
    rng = rng_for("field")
    for field in rng.sample(sorted(FIELD_EDITS), 3):
        shutil.copy(copy / MANIFEST, copy / "edgekit.json.bak")
        edit_manifest(copy, FIELD_EDITS[field], reseal=False)
        one_line_error(cli("verify", copy), 1, f"manifest field {field} was edited")
        shutil.move(copy / "edgekit.json.bak", copy / MANIFEST)
    assert cli("verify", copy).returncode == 0


@pytest.mark.parametrize(
    "path", ["../evil/decoder.gguf", "/etc/passwd", "decoder/../../evil.gguf", "./decoder/decoder.gguf"]
)
def test_resealed_part_path_outside_the_bundle(copy, tmp_path, path):
    """Even a manifest re-sealed after the edit may not point outside the bundle."""
    (tmp_path / "evil").mkdir()
    shutil.copy(copy / "decoder" / "decoder.gguf", tmp_path / "evil" / "decoder.gguf")
    edit_manifest(copy, lambda m: m["parts"]["decoder"].update(path=path), reseal=True)
    refused_everywhere(copy, "parts.decoder", "must")


def test_resealed_tokenizer_dir_absolute(copy):
    edit_manifest(copy, lambda m: m.update(tokenizer_dir="/etc"), reseal=True)
    refused_everywhere(copy, "tokenizer_dir", "relative")


def test_resealed_part_not_among_artifacts(copy):
    edit_manifest(copy, lambda m: m["parts"]["decoder"].update(path="decoder/other.gguf"), reseal=True)
    refused_everywhere(copy, "not among the bundle's hashed artifacts")


def test_symlinked_artifact_pointing_outside(copy, tmp_path):
    outside = tmp_path / "outside.gguf"
    shutil.move(copy / "decoder" / "decoder.gguf", outside)
    (copy / "decoder" / "decoder.gguf").symlink_to(outside)  # same bytes, hash matches: still refused
    refused_everywhere(copy, "decoder/decoder.gguf", "symbolic link")


def test_symlinked_directory_of_unlisted_files(copy, tmp_path):
    (tmp_path / "loot").mkdir()
    (tmp_path / "loot" / "payload.so").write_bytes(b"\x7fELF")
    (copy / "plugins").symlink_to(tmp_path / "loot", target_is_directory=True)
    one_line_error(cli("verify", copy), 1, "plugins", "symbolic link")


def test_unlisted_file_reported(copy):
    (copy / "vision" / "extra.onnx").write_bytes(b"x" * 10)
    one_line_error(cli("verify", copy), 1, "vision/extra.onnx", "not listed")


def test_seal_removed(copy):
    edit_manifest(copy, lambda m: m.pop("seal"), reseal=False)
    refused_everywhere(copy, "no seal")


def test_half_written_bundle_never_verifies(copy):
    (copy / MANIFEST).unlink()
    one_line_error(cli("verify", copy), 2, "not a complete bundle")


# ---- signals -------------------------------------------------------------------------------------------------------


def _start_build(tiny_ckpt, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [EDGEKIT, "build", str(tiny_ckpt), "--target", "cpu", "--precision", "int4", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.parametrize("sig,code,word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_signal_during_build_exits_nonzero_then_resumes(tiny_ckpt, bundle, tmp_path, sig, code, word):
    out = tmp_path / "b"
    proc = _start_build(tiny_ckpt, out)
    _wait_for(out.with_name("b.partial") / "stages" / "tokenizer.json", proc)  # now in the vision stage
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    err = " ".join(err.decode().split())
    assert proc.returncode == code and word in err and "rerun" in err and "Traceback" not in err, err[-2000:]
    assert not out.exists()
    proc = cli("build", tiny_ckpt, "--target", "cpu", "--precision", "int4", "--out", out)
    assert proc.returncode == 0 and "(cached) tokenizer" in proc.stderr.decode(), proc.stderr[-2000:]
    assert cli("verify", out).returncode == 0
    assert (out / MANIFEST).read_bytes() == (bundle / MANIFEST).read_bytes()


# The console script with the CLI's import held up for 3 s (a finder that sleeps when edgekit.cli.app is imported):
# a signal then lands inside that import, whatever the speed of the machine.
SLOW_CLI_IMPORT = """
import sys, time
class Slow:
    def find_spec(self, name, path=None, target=None):
        if name == "edgekit.cli.app":
            print("importing", file=sys.stderr, flush=True)
            time.sleep(3)
        return None
sys.meta_path.insert(0, Slow())
sys.argv = ["edgekit", "--help"]
from edgekit.console import main
main()
"""


@pytest.mark.parametrize("sig,code,word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_signal_while_the_cli_is_importing(sig, code, word):
    """A signal while the console script imports the CLI: one line and 130/143, as during a command (it was a
    traceback and -2 once in CI, when a slow machine was still importing at the moment of a Ctrl-C)."""
    import sys

    proc = subprocess.Popen([sys.executable, "-c", SLOW_CLI_IMPORT], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stderr.readline().strip() == b"importing"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    err = err.decode()
    assert proc.returncode == code and word in err and "Traceback" not in err, err[-2000:]


def test_a_signal_held_back_by_the_import_is_not_lost_when_its_resend_is_late():
    """The import's resend timer may not get a turn before the program ends (a loaded machine: it exited 0 once in a
    full suite); with the resend an hour away, the held-back SIGTERM still ends the program with 143."""
    import sys

    late = "import edgekit.interrupts as i\ni.RETRY_S = 3600\n" + SLOW_CLI_IMPORT
    proc = subprocess.Popen([sys.executable, "-c", late], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stderr.readline().strip() == b"importing"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "terminated" in err.decode() and "Traceback" not in err.decode(), err[-2000:]


def test_ctrl_c_during_run(tiny_ckpt):
    proc = subprocess.Popen(
        [EDGEKIT, "run", str(tiny_ckpt), "--image", str(ASSET), "--max-new-tokens", "64"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.5)  # importing torch and transformers (or already loading the reference: either ends the same)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    err = err.decode()
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err[-2000:]


# ---- concurrency ---------------------------------------------------------------------------------------------------


def test_second_concurrent_build_into_same_out_fails_at_once(tiny_ckpt, tmp_path):
    out = tmp_path / "b"
    first = _start_build(tiny_ckpt, out)
    _wait_for(out.with_name("b.partial") / "OWNER", first)
    t0 = time.monotonic()
    second = cli("build", tiny_ckpt, "--target", "cpu", "--precision", "int4", "--out", out)
    one_line_error(second, 1, "another edgekit build is writing it")
    assert time.monotonic() - t0 < 30
    first.communicate(timeout=300)
    assert first.returncode == 0
    assert cli("verify", out).returncode == 0
