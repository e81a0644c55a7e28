"""`dvc plots show` works offline: .dvc/config sets plots.html_template to .dvc/plots/offline.html,
DVC's own page with vega, vega-lite and vega-embed inlined, so the page it writes loads nothing from a CDN."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dvc_render.vega import VegaRenderer

REPO = Path(__file__).resolve().parents[1]
VENDORED = REPO / ".dvc" / "plots"
# a loss curve as the training stages write it (plots/<stage>/<arch>.json)
CURVE = [{"lr": 0.001, "step": 10 * i, "train_loss": round(5.0 / i, 4)} for i in range(1, 6)]
DVC_YAML = """\
stages:
  train:
    cmd: "true"
    plots:
      - plots/train.json:
          x: step
          y: train_loss
          title: train loss
          cache: false
"""


def _dvc(*args: str, cwd: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _specs(page: str) -> list[dict]:
    """The vega-lite specs dvc_render writes into the page, one per plot."""
    return [json.loads(s) for s in re.findall(r"var spec = (\{.*\});", page)]


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> str:
    """dvc_plots/index.html that `dvc plots show` writes in a fresh repo with this repo's .dvc/config."""
    work = tmp_path_factory.mktemp("plots")
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    _dvc("init", "-q", cwd=work)
    shutil.copy(REPO / ".dvc" / "config", work / ".dvc" / "config")
    shutil.copytree(VENDORED, work / ".dvc" / "plots")
    (work / "dvc.yaml").write_text(DVC_YAML)
    (work / "plots").mkdir()
    (work / "plots" / "train.json").write_text(json.dumps(CURVE, indent=2))
    _dvc("plots", "show", cwd=work)
    return (work / "dvc_plots" / "index.html").read_text(encoding="utf-8")


def test_page_loads_nothing_from_the_network(page):
    assert "<script" in page
    assert not re.search(r"<script[^>]*\ssrc\s*=", page)  # every script is inline
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    for cdn in ("cdn.jsdelivr.net", "unpkg.com", "cdn.plot.ly"):  # dvc_render's default page loads these
        assert cdn not in page


def test_page_inlines_the_vendored_bundles_dvc_expects(page):
    # the versions DVC's default page loads from jsDelivr (as build_offline_template.py reads them)
    packages = re.findall(r"cdn\.jsdelivr\.net/npm/([\w-]+)@([\w.-]+)", VegaRenderer.SCRIPTS)
    assert [name for name, _ in packages] == ["vega", "vega-lite", "vega-embed"]
    for name, version in packages:
        assert f"<script>/* {name}@{version}, " in page, (
            f"{name}@{version} is not inlined: run .venv/bin/python .dvc/plots/build_offline_template.py"
        )
        assert (VENDORED / f"LICENSE.{name}").is_file()
    assert '<meta charset="utf-8">' in page  # the bundles hold non-ASCII text (number formats, ellipsis)


def test_page_embeds_the_plot_data(page):
    (spec,) = _specs(page)
    assert spec["title"]["text"] == "train loss"
    assert [(v["step"], v["train_loss"]) for v in spec["data"]["values"]] == [
        (p["step"], p["train_loss"]) for p in CURVE
    ]


# runs the page's inline scripts without a DOM, then compiles and renders every spec to SVG
RENDER_JS = """
const fs = require("fs"), vm = require("vm");
const page = fs.readFileSync(process.argv[1], "utf8");
const ctx = vm.createContext({console, setTimeout, clearTimeout});
for (const m of page.matchAll(/<script>([\\s\\S]*?)<\\/script>/g)) vm.runInContext(m[1], ctx);
if (typeof ctx.vegaEmbed !== "function") throw new Error("vega-embed did not load");
const specs = [...page.matchAll(/var spec = (\\{.*\\});/g)].map((m) => JSON.parse(m[1]));
Promise.all(specs.map((s) => new ctx.vega.View(ctx.vega.parse(ctx.vegaLite.compile(s).spec), {renderer: "none"}).toSVG()))
  .then((svgs) => console.log(JSON.stringify(svgs)));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_page_renders_with_the_vendored_bundles(page, tmp_path):
    (tmp_path / "index.html").write_text(page, encoding="utf-8")
    proc = subprocess.run(
        ["node", "-e", RENDER_JS, str(tmp_path / "index.html")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    (svg,) = json.loads(proc.stdout)
    assert svg.startswith("<svg") and "train loss" in svg
    assert 'aria-roledescription="line mark"' in svg
