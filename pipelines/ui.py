"""`make ui`: the Prefect UI with the pipeline deployed, and the MLflow UI, in one command.

Starts, bound to 127.0.0.1 and each in its own process group:

- a Prefect server (port 4200; its database in ``.prefect/`` unless ``PREFECT_HOME`` is set);
- the MLflow tracking server and UI (port 5000) on the project's store (``mlruns.db``, ``mlartifacts/``),
  which is then the single writer of every run the UI triggers;
- the flow ``flan-moe`` served from this repo as deployment ``flan-moe/pipeline``: the UI's "Run" form
  is ``pipelines.settings.RunSettings``. Runs are queued, one at a time (deployment concurrency limit 1,
  collision strategy ENQUEUE), so two runs triggered at once never share the workspace.

It prints both URLs and waits; Ctrl-C (or SIGTERM) stops all three process groups, nothing is left
behind. If any of them dies, the others are stopped and the exit status is 1.

    python -m pipelines.ui [--prefect-port 4200] [--mlflow-port 5000]
    python -m pipelines.ui --serve          # only the deployment, against $PREFECT_API_URL
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"
DEPLOYMENT = "pipeline"
LOGS = Path("logs") / "ui"  # the servers' output (the deployment's goes to the terminal)
STOP_TIMEOUT = 15.0  # seconds between SIGTERM and SIGKILL of a process group


def serve() -> None:
    """Serve the flow from this repo (blocks): the deployment the Prefect UI's form runs."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType

    from pipelines.flow import pipeline  # (imports flanmoe first: the offline environment)

    pipeline.serve(
        name=DEPLOYMENT,
        description="The flan-moe pipeline through DVC. Empty fields keep params.yaml; filled ones make "
        "the run a DVC experiment (see `dvc exp show`). Scores: the MLflow UI.",
        tags=["flan-moe"],
        global_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        limit=1,
        pause_on_shutdown=False,
        print_starting_message=False,  # main() prints the URLs
        # runs import pipelines.flow (a file-path entrypoint would load it under another module name,
        # where pydantic cannot resolve the form's annotations)
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def port_free(port: int, host: str = HOST) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - a local URL we built
            return r.status == 200
    except (OSError, urllib.error.URLError):
        return False


class Group:
    """A child process in its own session (process group), its output to ``log`` or the terminal."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path | None):
        self.name = name
        self.log = log
        out = open(log, "ab") if log else None  # noqa: SIM115 - closed in stop()
        self._out = out
        self.proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
        )  # fmt: skip

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM to the whole group, SIGKILL after ``STOP_TIMEOUT``, then wait until it is gone."""
        pgid = self.proc.pid  # start_new_session: the group's id is the leader's pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and _group_exists(pgid):
            self.proc.poll()
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        self.proc.wait()
        if self._out:
            self._out.close()

    def tail(self, n: int = 15) -> str:
        if not self.log or not self.log.is_file():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie leader still counts; reap it so that the group can disappear
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)
    return True


def _wait_healthy(groups: list[Group], url: str, what: str, timeout: float) -> None:
    """Wait until ``url`` answers 200; ``RuntimeError`` if one of ``groups`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not healthy(url):
        dead = [g for g in groups if not g.alive()]
        if dead:
            raise RuntimeError(f"{dead[0].name} exited (status {dead[0].proc.returncode}):\n{dead[0].tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready at {url} after {timeout:.0f} s")
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.ui", description=__doc__.split("\n\n")[0])
    ap.add_argument("--prefect-port", type=int, default=int(os.environ.get("PREFECT_PORT", 4200)))
    ap.add_argument("--mlflow-port", type=int, default=int(os.environ.get("MLFLOW_PORT", 5000)))
    ap.add_argument("--startup-timeout", type=float, default=180.0, help="seconds for the servers to start")
    ap.add_argument("--serve", action="store_true", help="only serve the deployment ($PREFECT_API_URL)")
    args = ap.parse_args(argv)
    if args.serve:
        serve()
        return 0

    root = Path.cwd()
    if not (root / "dvc.yaml").is_file():
        print(f"error: {root} has no dvc.yaml: run `make ui` in the repo", file=sys.stderr)
        return 2
    for port, opt in ((args.prefect_port, "--prefect-port / PREFECT_PORT"), (args.mlflow_port, "--mlflow-port / MLFLOW_PORT")):  # fmt: skip
        if not port_free(port):
            print(f"error: port {port} on {HOST} is in use; choose another with {opt}", file=sys.stderr)
            return 2

    prefect_url = f"http://{HOST}:{args.prefect_port}"
    mlflow_url = f"http://{HOST}:{args.mlflow_port}"
    env = {
        **os.environ,
        "PREFECT_HOME": os.environ.get("PREFECT_HOME") or str(root / ".prefect"),
        "PREFECT_API_URL": f"{prefect_url}/api",
        "PREFECT_UI_URL": prefect_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": HOST,
        "PREFECT_SERVER_API_PORT": str(args.prefect_port),
        "MLFLOW_TRACKING_URI": mlflow_url,  # the server is the one writer of every triggered run
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    logs = root / LOGS
    logs.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    groups: list[Group] = []

    def on_term(signum, frame):  # noqa: ARG001 - SIGTERM as Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    status = 0
    try:
        groups.append(
            Group(
                "mlflow server",
                [
                    str(bin_dir / "mlflow"),
                    "server",
                    "--backend-store-uri",
                    f"sqlite:///{root / 'mlruns.db'}",
                    "--default-artifact-root",
                    str(root / "mlartifacts"),
                    "--host",
                    HOST,
                    "--port",
                    str(args.mlflow_port),
                    "--workers",
                    "1",
                ],
                env,
                logs / "mlflow.log",
            )  # fmt: skip
        )
        groups.append(
            Group(
                "prefect server",
                [
                    sys.executable,
                    "-m",
                    "prefect",
                    "server",
                    "start",
                    "--host",
                    HOST,
                    "--port",
                    str(args.prefect_port),
                ],
                env,
                logs / "prefect.log",
            )  # fmt: skip
        )
        _wait_healthy(groups, f"{prefect_url}/api/health", "Prefect server", args.startup_timeout)
        _wait_healthy(groups, f"{mlflow_url}/health", "MLflow server", args.startup_timeout)
        server = Group("deployment", [sys.executable, "-m", "pipelines.ui", "--serve"], env, None)
        groups.append(server)
        deployment = f"{env['PREFECT_API_URL']}/deployments/name/flan-moe/{DEPLOYMENT}"
        _wait_healthy(groups, deployment, f"deployment flan-moe/{DEPLOYMENT}", args.startup_timeout)
        print(
            f"\nflan-moe UI ready (server logs in {LOGS}/):\n"
            f"  Prefect  {prefect_url}  deployment flan-moe/{DEPLOYMENT}: Run > Custom run\n"
            f"  MLflow   {mlflow_url}  experiment runs, compare view\n"
            "Ctrl-C stops both.\n",
            flush=True,
        )
        while all(g.alive() for g in groups):
            time.sleep(1.0)
        dead = next(g for g in groups if not g.alive())
        print(f"error: {dead.name} exited (status {dead.proc.returncode})\n{dead.tail()}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        for g in reversed(groups):
            g.stop()
    print("stopped.", flush=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
