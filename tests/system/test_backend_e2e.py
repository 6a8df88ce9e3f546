"""The whole backend as users run it: a real broker and real SAM2 workers
(sam2.1 tiny, random weights) in their own processes, on real sockets.

Random weights make the masks meaningless, so these tests assert what is
deterministic: shapes, dtypes, scores, counters, routing and fault handling.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from protocol.wire.client import ClientConfig, SamClient
from protocol.wire.errors import RemoteError
from tests.support.backend import Backend, running_backend
from tests.support.processes import MODEL, REPO_ROOT, free_endpoint, log_text, wait_until

pytestmark = pytest.mark.model


def _image(seed: int, size: int = 96) -> np.ndarray:
    """A grey uint8 test image with a bright disk, (size, size)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size]
    disk = (rows - size / 2) ** 2 + (cols - size / 3) ** 2 < (size / 5) ** 2
    return (rng.integers(0, 60, (size, size)) + 150 * disk).astype(np.uint8)


def _client(frontend: str, timeout_s: float = 120.0) -> SamClient:
    return SamClient(frontend, MODEL, config=ClientConfig(timeout_s=timeout_s, retries=0))


def _infos(client: SamClient, n_workers: int) -> dict[str, dict]:
    """``info`` of every worker, keyed by worker id (idle workers take turns)."""
    infos: dict[str, dict] = {}
    for _ in range(20 * n_workers):
        result = client.call("info").header["result"]
        infos[result["worker_id"]] = result
        if len(infos) == n_workers:
            break
    assert len(infos) == n_workers, infos.keys()
    return infos


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory, random_checkpoint: Path) -> Iterator[Backend]:
    """A broker and two SAM2 workers for the module's two-worker tests (starting them costs seconds of
    torch import and model build each): the embedding test reads the counters as a difference, and
    the SIGKILL test, which leaves one worker dead, is the last to use them (the file's order)."""
    with running_backend(tmp_path_factory.mktemp("e2e-two"), random_checkpoint, workers=2) as backend:
        yield backend


def _counters(client: SamClient, n_workers: int) -> dict[str, dict[str, int]]:
    """Each worker's encoder runs, images received and segment requests so far, keyed by worker id."""
    return {
        wid: {
            "encoder_runs": info["counters"]["encoder_runs"],
            "images_received": info["counters"]["images_received"],
            "segment": info["counters"]["by_op"].get("segment", 0),
        }
        for wid, info in _infos(client, n_workers).items()
    }


def test_two_workers_point_box_and_both_reuse_one_embedding(two_workers: Backend) -> None:
    backend = two_workers
    image = _image(1)
    with _client(backend.frontend) as client:
        before = _counters(client, 2)
        point = client.call("segment", {"points": [[40, 30], [70, 80]], "point_labels": [1, 0]}, image=image)
        box = client.call("segment", {"box": [20, 10, 70, 60]}, image=image)
        both_prompt = {"points": [[45, 32]], "point_labels": [1], "box": [20, 10, 70, 60]}
        both = client.call("segment", both_prompt, image=image)
        for reply in (point, box, both):
            result = reply.header["result"]
            mask = reply.arrays["mask"]
            assert mask.dtype == np.bool_ and mask.shape == image.shape
            assert len(result["scores"]) == 3 and all(np.isfinite(result["scores"]))
            assert 0 <= result["best"] < 3 and result["shape"] == [96, 96]
        assert both.header["result"]["prompt"]["points"] == [[45.0, 32.0]]
        assert both.header["result"]["prompt"]["box"] == [20.0, 10.0, 70.0, 60.0]

        after = _counters(client, 2)
    # Three prompts on one image: the pixels travelled once and the encoder ran once,
    # on the worker the broker kept choosing for that image key (affinity).
    counters = [{key: after[wid][key] - before[wid][key] for key in after[wid]} for wid in after]
    assert sum(c["encoder_runs"] for c in counters) == 1
    assert sum(c["images_received"] for c in counters) == 1
    assert sorted(c["segment"] for c in counters) == [0, 3]


def test_auto_returns_a_label_image(module_backend: Backend) -> None:
    backend = module_backend
    image = np.stack([_image(2, 64)] * 3, axis=-1)
    with _client(backend.frontend) as client:
        params = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
        reply = client.call("auto", params, image=image)
    labels = reply.arrays["labels"]
    result = reply.header["result"]
    assert labels.dtype == np.uint32 and labels.shape == (64, 64)
    ids = set(np.unique(labels)) - {0}
    assert ids == set(range(1, result["num_objects"] + 1))
    assert reply.arrays["areas"].shape == (result["num_objects"],)


def test_bad_requests_get_clear_errors_and_worker_keeps_serving(module_backend: Backend) -> None:
    backend = module_backend
    image = _image(3, 64)
    with _client(backend.frontend) as client:
        cases = [
            ("segment", {"points": [[500, 3]], "point_labels": [1]}, "outside"),
            ("segment", {}, "prompt"),
            ("segment", {"points": [[1, 2]], "point_labels": [7]}, "label"),
            ("frobnicate", {}, "frobnicate"),
        ]
        for op, params, words in cases:
            with pytest.raises(RemoteError, match=words) as info:
                client.call(op, params, image=image)
            assert info.value.code in {"bad_request", "unknown_op"}
        ok = client.call("segment", {"points": [[10, 10]], "point_labels": [1]}, image=image)
    assert ok.arrays["mask"].shape == (64, 64)


def test_sigkill_mid_request_is_answered_by_the_other_worker(two_workers: Backend) -> None:
    backend = two_workers
    image = _image(4)
    with _client(backend.frontend) as client:
        pids = {info["pid"]: wid for wid, info in _infos(client, 2).items()}
        assert set(pids) == {w.pid for w in backend.workers}
        logged = {proc.pid: len(log_text(proc)) for proc in backend.workers}  # earlier tests' lines

        # A new image costs seconds of encoding: kill whichever worker starts it.
        def kill_busy_worker() -> None:
            for proc in backend.workers:
                if "op=segment" in log_text(proc)[logged[proc.pid] :]:
                    os.kill(proc.pid, signal.SIGKILL)
                    return
            raise AssertionError("no worker logged the segment request")

        import threading

        timer = threading.Timer(1.0, kill_busy_worker)
        timer.start()
        start = time.monotonic()
        reply = client.call("segment", {"points": [[30, 30]], "point_labels": [1]}, image=image)
        elapsed = time.monotonic() - start
        timer.join()
    assert reply.arrays["mask"].shape == image.shape
    assert sum(proc.poll() == -signal.SIGKILL for proc in backend.workers) == 1
    # one encode lost, one encode done, plus the liveness window: well under a minute on CPU
    assert elapsed < 60


def test_start_all_no_viewer_random_weights_answers_info_and_stops(tmp_path) -> None:
    frontend, backend = free_endpoint(), free_endpoint()
    log_dir = tmp_path / "logs"
    proc = subprocess.Popen(
        ["bash", "scripts/start_all.sh", "--no-viewer", "--random-weights", "--frontend", frontend,
         "--backend", backend, "--log-dir", str(log_dir)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    output: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            line = proc.stdout.readline().decode(errors="replace")
            if not line:
                break
            output.append(line)
            if "backend ready" in line:
                break
        assert any("backend ready" in line for line in output), "".join(output)
        assert any("MEANINGLESS" in line for line in output)
        with _client(frontend, timeout_s=60) as client:
            info = client.call("info").header["result"]
        assert info["model"] == MODEL and info["random_weights"] is True and info["device"] == "cpu"
        assert (log_dir / "broker.log").exists() and (log_dir / "worker-cpu.log").exists()

        os.killpg(proc.pid, signal.SIGINT)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            logs = {p.name: p.read_text()[-2000:] for p in log_dir.glob("*.log")}
            pytest.fail(f"start_all.sh did not stop within 30 s of SIGINT; logs: {logs}")
        assert code == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    # every child is gone: nobody answers any more
    assert wait_until(lambda: "ready" in (log_dir / "broker.log").read_text(), 1)
    with SamClient(frontend, MODEL) as client:
        with pytest.raises(Exception, match="no answer"):
            client.services(timeout_s=1.0)
