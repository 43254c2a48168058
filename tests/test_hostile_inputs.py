"""Hostile inputs: every bad config, data file, directory, stage name and endpoint gives one clear ``error:`` line and
exit code 2, never a traceback, and nothing escapes its folder. One test per case found trying the CLI as a hostile
user would."""

import socket
import subprocess
import threading
import time

import pytest

from tests.conftest import TINY_CONFIG, dirs, run_check, run_cli


def cli_error(*args, timeout=600):
    """Run the CLI and return its stderr, asserting the planned-failure contract (``--check``: in this process)."""
    r = run_check(*args) if "--check" in args else run_cli(*args, timeout=timeout)
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, r.stderr[-3000:]
    return r.stderr


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text) if isinstance(text, str) else p.write_bytes(text)
    return str(p)


def test_config_that_is_not_utf8(tmp_path):
    err = cli_error(write(tmp_path, TINY_CONFIG.encode() + b"\ndescription: caf\xe9\n"), "--check")
    assert "not UTF-8 text (line" in err


@pytest.mark.parametrize("setting,message", [
    ("students.x.name=y", "students is a list; use an item number"),
    ("students.3=x", "index 3 out of range (list has 1 items)"),
    ("name.first=x", "name is a str, not a mapping or a list"),
    ("students..name=y", "the key path has an empty part"),
])
def test_bad_set_paths(tiny_config, setting, message):
    assert message in cli_error(str(tiny_config), "--check", "--set", setting)


def test_directories_that_cannot_be_used(tiny_config, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "runtime.cache_dir: " in cli_error(str(tiny_config), "--set", f"runtime.cache_dir={afile}")
    assert "runtime.runs_dir: cannot create" in cli_error(str(tiny_config), "--set",
                                                          f"runtime.runs_dir={afile}/sub")
    assert "--run-dir: " in cli_error(str(tiny_config), "--set", f"runtime.cache_dir={tmp_path / 'c'}",
                                      "--run-dir", str(afile))


@pytest.mark.parametrize("rows,message", [
    ('{"prompt": "a", "response": "b"}\n7\n', "line 2 is a JSON int, not an object"),
    ('{"prompt": "a", "response": "b"}\n["prompt", "b"]\n', "line 2 is a JSON list, not an object"),
    ("".join('{"prompt": "p%d", "response": "r"}\n' % i for i in range(6)) + '{"prompt": "x", "response": }\n',
     "line 7, column 29: not valid JSON"),
])
def test_bad_jsonl_rows(tmp_path, rows, message):
    from poison.ground.core import registry
    from poison.ground.core.errors import DataError

    f = tmp_path / "d.jsonl"
    f.write_text(rows)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        registry.get("data_source", "file").build({"path": str(f)}).load()


def test_jsonl_row_that_is_not_utf8(tmp_path):
    from poison.ground.core import registry
    from poison.ground.core.errors import DataError

    f = tmp_path / "d.jsonl"
    f.write_bytes(b'{"prompt": "a", "response": "b"}\n{"prompt": "caf\xe9", "response": "b"}\n')
    with pytest.raises(DataError, match=r"line 2 is not UTF-8 text"):
        registry.get("data_source", "file").build({"path": str(f)}).load()


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", ".."])
def test_run_name_is_one_safe_path_component(tiny_config, name):
    assert "not a safe run name" in cli_error(str(tiny_config), "--check", "--set", f"name={name!r}"
                                              if name else "name=''")


def test_yaml_alias_bomb_is_refused_quickly(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
    t = time.time()
    err = cli_error(write(tmp_path, TINY_CONFIG.replace("name: tiny\n", "name: tiny\n" + bomb.replace(
        "a: &a", "description: &a"))), "--check")
    assert time.time() - t < 20 and ("expands to more than" in err or "aliases" in err)


@pytest.mark.parametrize("edit,message", [
    (lambda c: c.replace("seed: 0\n", "seed: 0\nseed: 1\n"), "duplicate key 'seed'"),
    (lambda c: c.replace("count: 6", "count: true"), "poison.count"),
    (lambda c: c.replace("epochs: 2,", "epochs: .inf,"), "teacher.train.epochs"),
])
def test_yaml_values_that_were_silently_accepted(tmp_path, edit, message):
    assert message in cli_error(write(tmp_path, edit(TINY_CONFIG)), "--check")


def test_force_names_a_real_stage(tiny_config):
    err = cli_error(str(tiny_config), "--check", "--force", "bogus")
    assert "--force bogus: unknown stage 'bogus'" in err and "teacher" in err and "eval" in err


def test_check_resolves_models_without_converting(tiny_config, tmp_path):
    err = cli_error(str(tiny_config), "--check", "--set", "teacher.model=./no/such/model",
                    "--set", f"runtime.models_dir={tmp_path / 'm'}")
    assert "teacher.model: local model folder ./no/such/model does not exist" in err
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())  # --check converted nothing


def test_check_notes_a_hub_id_it_cannot_reach_and_does_not_fail_on_it(tiny_config, tmp_path):
    """The cache walk of --check used to resolve the generator again without the notes list, so an unreachable
    hub id that preflight had noted ended the check in an error (seen on configs/gpu/*.yaml offline)."""
    r = run_cli(str(tiny_config), "--check", "--set", "data.generator.model=SomeOrg/not-in-any-cache",
                "--set", f"runtime.cache_dir={tmp_path / 'c'}", env={"HF_HUB_OFFLINE": "1"}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "note: data.generator.model: hub id 'SomeOrg/not-in-any-cache' is not in the local Hugging Face cache" \
        in r.stderr
    assert "model SomeOrg/not-in-any-cache and what follows it would be computed" in r.stderr


def test_typo_in_a_model_id_is_an_error_with_a_did_you_mean(tiny_config):
    """A model id that is no built-in, no local path and no org/name hub id used to pass --check with a note."""
    err = cli_error(str(tiny_config), "--check", "--set", "teacher.model=smollm2-135m")
    assert "error: teacher.model: 'smollm2-135m' is not a built-in model (did you mean 'smollm2-135m-instruct'?)" in err
    assert "built-in models: smollm2-135m-instruct, gemma-3-270m, tiny-random-llama[:L[:H]]" in err


def test_model_ids_a_typo_check_leaves_alone(tmp_path, monkeypatch):
    import huggingface_hub

    from poison.ground.core.errors import ModelError
    from poison.ground.engines.models import resolve_model

    with pytest.raises(ModelError, match=r"students.0.model: 'tiny-random-lama:2:64' is not a built-in model "
                                         r"\(did you mean 'tiny-random-llama:2:64'\?\)"):
        resolve_model("tiny-random-lama:2:64", tmp_path, "students.0.model", create=False)
    asked = []  # an org/name hub id, and a bare legacy one far from every built-in (gpt2), still go to the hub
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda spec, **kw: asked.append(spec) or str(tmp_path))
    assert resolve_model("SomeOrg/some-model", tmp_path, create=False) == tmp_path and asked == ["SomeOrg/some-model"]
    assert resolve_model("gpt2", tmp_path, create=False) == tmp_path and asked[-1] == "gpt2"
    (tmp_path / "local").mkdir()  # an existing local folder still resolves, by a bare relative name too
    (tmp_path / "local" / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert resolve_model("local", tmp_path, create=False) == (tmp_path / "local").resolve()


class SilentServer:
    """Accepts TCP connections and never answers (the endpoint that hung the data stage)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.conns = []
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        for c in self.conns:
            c.close()
        self.sock.close()


def test_endpoint_that_accepts_but_never_answers_fails_within_one_request(tmp_path, models_dir):
    server = SilentServer()
    try:
        cfg = TINY_CONFIG.replace("    - {type: gsm8k, n_train: 12, n_distill: 6, n_eval: 6}",
                                  "    - {type: gsm8k, n_train: 12, n_distill: 6, n_eval: 6}\n"
                                  "    - {type: drug_reviews, n_train: 4, n_distill: 0, n_eval: 4}")
        t = time.time()
        err = cli_error(write(tmp_path, cfg), *dirs(tmp_path, models_dir), "--set",
                        f"data.generator.endpoint=http://127.0.0.1:{server.port}/v1", "--set",
                        "data.generator.timeout=2", "--set", "data.generator.max_retries=1", timeout=300)
        assert time.time() - t < 90
        assert "data.generator.endpoint: endpoint http://127.0.0.1:" in err
        assert "accepted the connection but did not answer within 2 s (2 attempts)" in err
    finally:
        server.close()


def test_unreachable_judge_is_one_clear_error(tmp_path, models_dir):
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    closed = f"http://127.0.0.1:{port.getsockname()[1]}/v1"
    port.close()
    cfg = write(tmp_path, TINY_CONFIG)
    sets = [*dirs(tmp_path, models_dir), "--set", f"judge.endpoint={closed}", "--set", "judge.args.max_retries=0"]
    err = cli_error(cfg, *sets, "--set", "judge.evaluate=true")
    assert f"judge endpoint {closed} is unreachable" in err
    err = cli_error(cfg, *sets, "--set", 'defense.defenses=[{type: llm_autorater, threshold: 5}]')
    assert f"judge endpoint {closed} is unreachable" in err


def test_worker_killed_by_the_kernel_names_the_memory_setting(monkeypatch):
    from poison.ground.core.errors import GenerationError
    from poison.ground.engines import generate as g

    monkeypatch.setattr(g.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, -9))
    with pytest.raises(GenerationError, match=r"killed \(signal 9\), most likely .* lack of memory.*"
                                              r"gpu_memory_utilization 0.3 gave vLLM up to"):
        g.generate_vllm([g.GenJob("k", "m", [[{"role": "user", "content": "x"}]])], device="cpu", dtype="float32",
                        vllm_settings={"gpu_memory_utilization": 0.3})


def test_api_key_never_reaches_a_file_and_nothing_is_unpickled(tiny_run):
    import ast

    from tests.conftest import REPO, TINY_RUN_SECRET

    secret = TINY_RUN_SECRET  # the shared tiny run was made with OPENAI_API_KEY set to it
    for root in (tiny_run.run_dir, tiny_run.cache):
        for f in root.rglob("*"):
            if f.is_file() and f.stat().st_size < 50_000_000:
                assert secret.encode() not in f.read_bytes(), f
    for pkg in ("poison", "distill", "defenses", "evals", "dashboard"):
        for f in (REPO / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    mods = {a.name for a in node.names} | {getattr(node, "module", None) or ""}
                    assert not {m.split(".")[0] for m in mods} & {"pickle", "marshal", "shelve", "dill"}, f
                if isinstance(node, ast.Call):
                    fn = node.func
                    if isinstance(fn, ast.Name):
                        assert fn.id not in {"eval", "exec", "compile", "__import__"}, (f, fn.id)
                    name = fn.attr if isinstance(fn, ast.Attribute) else ""
                    assert name not in {"read_pickle", "unsafe_load", "full_load"}, (f, name)
                    if name == "load" and isinstance(fn, ast.Attribute) and getattr(fn.value, "id", "") == "torch":
                        pytest.fail(f"{f}: torch.load")
