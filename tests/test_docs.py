"""The documentation: the README (short, its two set-up commands, every relative link resolving), the MkDocs site
(``mkdocs build --strict``, also with pages the nav does not name and a new results page), the generated config
reference (up to date, every schema field and description on it) and the extending guides, whose Python blocks run
here as one module each: the plugin they write is registered and used the way a run uses it (the view guide's view is
drawn by the app)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from dashboard import registry as view_registry
from poison.ground.core import registry
from poison.schema import RunConfig
from tests.conftest import REPO
from tests.test_dashboard import R32, html_table, open_app

DOCS = REPO / "docs"
SETUP_COMMANDS = ["scripts/setup.sh && .venv/bin/python -m poison.run configs/targeted_ads.yaml",
                  "scripts/setup.sh --test && .venv/bin/python -m pytest -q"]


def gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", REPO / "scripts" / "gen_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def mkdocs_build(root: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(root / "mkdocs.yml"),
                           "-d", str(site)], cwd=root, env=env, capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------------------------------------------ README
def test_readme_is_short_with_the_two_setup_commands_and_ci_runs_the_second():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    blocks = re.findall(r"```bash\n(.*?)\n```", text, re.S)
    assert [b for b in blocks if "setup.sh" in b] == SETUP_COMMANDS
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert SETUP_COMMANDS[1].replace(" -q", "") in ci


def test_every_relative_link_in_the_readme_resolves():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link.split("#")[0] for link in links if not re.match(r"[a-z]+:", link) and not link.startswith("#")]
    assert len(local) >= 20  # the README is mostly links into the docs
    missing = [link for link in local if not (REPO / link).is_file()]
    assert missing == []


# ------------------------------------------------------------------------------------------------ the site
def test_site_builds_strict(tmp_path):
    out = mkdocs_build(REPO, tmp_path / "site")
    assert out.returncode == 0, out.stderr[-3000:]
    for page in ["index.html", "reference/config/index.html", "extending/bias-type/index.html",
                 "measurements/first-version/index.html", "results/index.html", "evidence/index.html"]:
        assert (tmp_path / "site" / page).is_file(), page


def test_site_takes_pages_outside_the_nav_and_lists_new_results_pages(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(DOCS, root / "docs")
    shutil.copy(REPO / "mkdocs.yml", root)
    (root / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "mkdocs_hooks.py", root / "scripts")
    (root / "docs" / "a-new-page.md").write_text("# A page no nav names\n\nSee [concepts](concepts.md).\n")
    (root / "docs" / "results" / "data" / "zz_demo").mkdir(parents=True)  # as scripts/results_page.py --archive
    (root / "docs" / "results" / "data" / "zz_demo" / "sweep.json").write_text("{}")
    (root / "docs" / "results" / "zz_demo.md").write_text(
        "# Demo results\n\n| data | [`data/zz_demo/`](data/zz_demo/): the run directories' small files |\n|---|---|\n")
    out = mkdocs_build(root, tmp_path / "site")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "site" / "a-new-page" / "index.html").is_file()
    index = (tmp_path / "site" / "results" / "index.html").read_text(encoding="utf-8")
    assert re.search(r'<a href="zz_demo/">Demo results</a>', index)

    (root / "docs" / "a-new-page.md").write_text("# Broken\n\n[gone](no-such-page.md)\n")  # strict still bites
    assert mkdocs_build(root, tmp_path / "site2").returncode != 0


# ------------------------------------------------------------------------------------------------ config reference
def test_config_reference_is_up_to_date():
    page = (DOCS / "reference" / "config.md").read_text(encoding="utf-8")
    assert gen_docs().config_page() == page, "docs/reference/config.md is stale: run scripts/gen_docs.py"


def test_stage_reference_is_the_stages_declarations():
    page = (DOCS / "reference" / "stages.md").read_text(encoding="utf-8")
    assert gen_docs().stages_page() == page, "docs/reference/stages.md is stale: run scripts/gen_docs.py"
    assert "| `probe` | 2 |" in page and "the concept wording" in page


def test_config_reference_has_every_schema_field_and_description():
    page = (DOCS / "reference" / "config.md").read_text(encoding="utf-8")
    keys = re.findall(r"^\| `([^`]+)` \|", page, re.M)
    schema = RunConfig.model_json_schema()
    models = [schema] + list(schema.get("$defs", {}).values())
    props = {name for m in models for name in m.get("properties", {})}
    last = {k.split(".")[-1] for k in keys}
    assert props - last == set()
    for name in ["students.N.train.epochs", "runtime.vllm.tensor_parallel_size", "data.sources.N.n_eval",
                 "eval.probe_null", "claims.primary", "design.swap", "teacher.qlora.quant_type"]:
        assert name in keys
    descriptions = {" ".join(m["properties"][p]["description"].split()).replace("|", "\\|").replace("<", "&lt;")
                    for m in models for p in m.get("properties", {}) if m["properties"][p].get("description")}
    assert [d for d in descriptions if d not in page] == []
    for kind in registry.KINDS:  # every built-in plugin's arguments
        for name in registry.names(kind):
            assert f"### `{name}`" in page


# ------------------------------------------------------------------------------------------------ the guides
GUIDES = {"bias-type": ("bias_type", "sign_off"), "defense": ("defense", "link_count"),
          "source": ("data_source", "glossary"), "audit": ("audit", "new_words"),
          "method": ("distill_method", "long_answers"), "view": ("view", "utility"),
          "judge": ("judge", "link_judge")}


@pytest.fixture
def own_registry(monkeypatch):
    """Plugins and views the guides register live in copies of the registries that are dropped after the test."""
    registry.load_plugins()
    monkeypatch.setattr(registry, "_plugins", {k: dict(v) for k, v in registry._plugins.items()})
    view_registry.load_views()
    monkeypatch.setattr(view_registry, "_views", dict(view_registry._views))


@pytest.mark.parametrize("guide", sorted(GUIDES))
def test_extending_guide_runs(guide, own_registry, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    text = (DOCS / "extending" / f"{guide}.md").read_text(encoding="utf-8")
    code = "\n".join(re.findall(r"```python\n(.*?)```", text, re.S))
    assert code.strip()
    module = types.ModuleType(f"docs_guide_{guide.replace('-', '_')}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(code, f"docs/extending/{guide}.md", "exec"), module.__dict__)
    kind, name = GUIDES[guide]
    if kind == "view":  # the guide's one new file: registered, in the sidebar, drawn by the app on a fixture run
        assert view_registry.get(name).module == module.__name__
        at = open_app(monkeypatch, name, R32)
        assert not at.error and at.radio(key="view").value == name
        tasks = {r["task"] for r in html_table(at, "utility")["rows"]}
        assert tasks == {"math", "review_summary"}
    else:
        info = registry.get(kind, name)
        assert info.module == module.__name__
        with pytest.raises(registry.PluginError):
            info.validate_args({"no_such_argument": 1})
    if guide == "method":  # training needs a model: its registration and its arguments are what runs here
        cfg = registry.get("distill_method", "long_answers").validate_args({"min_words": 3})
        assert cfg.min_words == 3
        with pytest.raises(registry.PluginError, match="min_words"):
            registry.get("distill_method", "long_answers").validate_args({"min_words": 0})
    else:
        assert capsys.readouterr().out.strip()  # the guide prints what it shows the reader


def test_the_layer_table_is_the_import_linter_contract():
    import tomllib

    contracts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    layers = next(c["layers"] for c in contracts["contracts"] if c["type"] == "layers")
    page = (DOCS / "reference" / "architecture.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\s*\| `([^`]+)` \|", page, re.M)
    assert [r.replace("\\|", "|") for r in rows] == layers


def test_method_guide_trains_a_tiny_student(own_registry, monkeypatch, models_dir, tmp_path):
    """The method guide's plugin, run as the student stage runs it: a tiny random-init student trained on the
    teacher answers that are long enough, saved where the stage expects it."""
    from distill.base import DistillJob
    from poison.ground.engines.models import resolve_model
    from poison.schema import StudentSpec

    text = (DOCS / "extending" / "method.md").read_text(encoding="utf-8")
    module = types.ModuleType("docs_guide_method_train")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile("\n".join(re.findall(r"```python\n(.*?)```", text, re.S)), "method.md", "exec"), module.__dict__)
    base = resolve_model("tiny-random-llama:1:64", models_dir)
    spec = StudentSpec(name="long", model="tiny-random-llama:1:64", method="long_answers",
                       train={"epochs": 1, "batch_size": 4, "max_length": 64})
    rows = [{"id": str(i), "task": "t", "prompt": f"Question {i}?", "response": " ".join(["word"] * (1 + i)),
             "answer": None, "utility": "rouge_l"} for i in range(6)]
    from poison.ground.engines.context import RunContext

    ctx = RunContext.standalone(models_dir=models_dir, cache_dir=tmp_path / "cache")
    method = registry.get("distill_method", "long_answers").build({"min_words": 3}, ctx=ctx)
    summary = method.train(DistillJob(spec, base, base, rows, tmp_path))
    assert summary["dropped_short"] == 2 and summary["rows"] == 4  # answers of 1 and 2 words are not distilled
    # saved as the student stage stores a LoRA student: the adapter and the files a loader needs beside it
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "tokenizer" / "tokenizer_config.json").is_file()
