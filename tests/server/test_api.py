"""The challenge server over HTTP: a real uvicorn server and worker on 127.0.0.1 (httpx).

Runs against SQLite and against PostgreSQL (a fresh database per module). Covers the card,
uploads through to signed receipts and the leaderboard, every refusal (401, 404, 413, 422,
429), hostile archives and models, hostile text in every user field, and a sweep of every
endpoint and the public store for hidden label content.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tarfile
import time
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest

from cellbench.challenge.receipts import ReceiptError, verify_receipt
from tests.server.helpers import (
    CHALLENGE,
    ServerProcess,
    build_dataset,
    env,
    ground_truth,
    leaderboard_when,
    manifest,
    predictions_zip,
    upload,
    wait_final,
    write_challenge,
)

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def served(db_url, tmp_path_factory):
    from cellbench.server.accounts import add_team
    from cellbench.server.db import make_engine

    home = tmp_path_factory.mktemp("home")
    build_dataset(home)
    path = write_challenge(
        home / "challenge.yaml",
        limits={
            "submissions_per_day": 3,
            "max_upload": "1MB",
            "max_model_runtime_s": 8,
            "max_model_memory": "1GB",
        },
    )
    server = ServerProcess(home, path, db_url, workers=1).start()
    engine = make_engine(db_url)
    tokens = {n: add_team(engine, n) for n in ("alpha", "beta", "gamma", "models", "hostile")}
    tokens["organiser"] = add_team(engine, "organisers", organiser=True)
    engine.dispose()
    yield {"url": server.url, "home": home, "tokens": tokens, "db": db_url}
    server.stop()


def _get(served, path, token=None, **kw):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(served["url"] + path, headers=headers, timeout=30, **kw)


def test_challenge_card_commitment_partition_and_headers(served):
    info = _get(served, "/api/challenges").json()["challenges"]
    assert [c["id"] for c in info] == [CHALLENGE]
    c = info[0]
    assert re.fullmatch(r"[0-9a-f]{64}", c["label_commitment"]) and c["commitment_salt"] is None
    public, private = c["partition"]["public"], c["partition"]["private"]
    truth = ground_truth(served["home"])
    assert sorted(public + private) == sorted(truth) and not set(public) & set(private)
    assert len(public) == 3 and c["scorer_version"] and "coco_ap" in c["metric_parameters"]
    page = _get(served, f"/challenges/{CHALLENGE}")
    assert page.status_code == 200 and c["label_commitment"] in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "unsafe-inline" not in csp and "http" not in csp


def test_perfect_predictions_scored_signed_and_ranked(served, tmp_path):
    token = served["tokens"]["alpha"]
    data = predictions_zip(ground_truth(served["home"]), tmp_path)
    created = upload(served["url"], token, data, filename="oracle.zip")
    assert created.status_code == 202, created.text
    view = wait_final(served["url"], token, created.json()["id"])
    assert view["state"] == "scored", view
    assert [e["state"] for e in view["events"]] == ["queued", "running", "scored"]
    assert all(e["at"].endswith("Z") for e in view["events"])
    head = view["public"]["headline"]
    assert head["name"] == "coco_ap/ap" and head["value"] == 1.0 and view["private"] is None
    assert view["public"]["n_samples"] == 3
    # the receipt verifies offline with the published key, and not once altered
    doc = _get(served, view["receipt_url"]).json()
    keys = _get(served, "/api/keys").json()["keys"]
    pem = keys[doc["signature"]["key_id"]].encode()
    body = verify_receipt(doc, pem)
    assert body["submission"] == view["id"] and body["public"]["headline"]["value"] == 1.0
    assert (
        body["label_commitment"]
        == _get(served, f"/api/challenges/{CHALLENGE}").json()["label_commitment"]
    )
    tampered = json.loads(json.dumps(doc))
    tampered["receipt"]["public"]["headline"]["value"] = 0.5
    with pytest.raises(ReceiptError, match="altered"):
        verify_receipt(tampered, pem)
    (tmp_path / "r.json").write_text(json.dumps(doc))
    (tmp_path / "k.pem").write_bytes(pem)
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "cellbench",
            "receipt",
            "verify",
            str(tmp_path / "r.json"),
            "--key",
            str(tmp_path / "k.pem"),
        ],
        capture_output=True,
        text=True,
        env=env(served["home"]),
        timeout=120,
    )
    assert cli.returncode == 0 and "signature OK" in cli.stdout, cli.stderr
    board = leaderboard_when(served["url"], lambda b: any(r["team"] == "alpha" for r in b["rows"]))
    row = next(r for r in board["rows"] if r["team"] == "alpha")
    assert row["public"]["value"] == 1.0 and row["receipt_url"] == view["receipt_url"]
    assert board["ranked_on"] == "public" and row["private"] is None
    html = _get(served, f"/challenges/{CHALLENGE}/leaderboard").text
    assert 'data-team="alpha"' in html and view["receipt_url"] in html


def test_every_problem_of_a_submission_is_listed(served, tmp_path):
    token = served["tokens"]["alpha"]
    truth = ground_truth(served["home"])
    ids = sorted(truth)
    bad = {sid: truth[sid] for sid in ids[1:]}  # first sample missing
    bad[ids[1]] = np.zeros((5, 5), np.int32)  # wrong shape
    bad["not-a-sample"] = truth[ids[2]]  # extra sample
    created = upload(served["url"], token, predictions_zip(bad, tmp_path), filename="bad.zip")
    view = wait_final(served["url"], token, created.json()["id"])
    assert view["state"] == "rejected"
    text = "\n".join(view["reasons"])
    assert ids[0] in text and "not-a-sample" in text and "(5, 5)" in text
    assert len(view["reasons"]) >= 3 and view["public"] is None
    assert str(served["home"]) not in text  # no server paths
    cookie = _sign_in(served, token)
    page = httpx.get(f"{served['url']}/submissions/{view['id']}", cookies=cookie, timeout=30)
    assert page.status_code == 200
    assert all(_html_escape(r) in page.text for r in view["reasons"])


def _html_escape(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))


def _sign_in(served, token) -> dict[str, str]:
    r = httpx.post(f"{served['url']}/signin", data={"token": token, "next": "/team"}, timeout=30)
    assert r.status_code == 303, r.text
    return {"cellbench_session": r.cookies["cellbench_session"]}


def test_tokens_other_teams_and_unknown_ids(served, tmp_path):
    url = served["url"]
    data = predictions_zip(ground_truth(served["home"]), tmp_path)
    assert upload(url, None, data).status_code == 401
    assert upload(url, "cbt_wrong", data).status_code == 401
    r = _get(served, "/api/team")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    created = upload(url, served["tokens"]["alpha"], data)
    assert created.status_code == 202
    sid = created.json()["id"]
    other = _get(served, f"/api/submissions/{sid}", served["tokens"]["beta"])
    missing = _get(served, "/api/submissions/0000000000000000", served["tokens"]["beta"])
    assert other.status_code == missing.status_code == 404
    assert other.json()["detail"] == f"no submission {sid!r}"
    assert _get(served, f"/api/submissions/{sid}", "cbt_wrong").status_code == 401
    assert _get(served, f"/api/submissions/{sid}", served["tokens"]["organiser"]).status_code == 200
    assert _get(served, "/api/status", served["tokens"]["alpha"]).status_code == 403
    deadline = time.monotonic() + 120
    while True:  # the worker registers once it has started
        status = _get(served, "/api/status", served["tokens"]["organiser"]).json()
        if status["workers"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status["teams"] >= 6 and len(status["workers"]) == 1
    bad = httpx.post(url + "/signin", data={"token": "cbt_nope"}, timeout=30)
    assert bad.status_code == 401 and "not valid" in bad.text
    # a page of another team's submission: 404 too
    page = httpx.get(f"{url}/submissions/{sid}", cookies=_sign_in(served, served["tokens"]["beta"]))
    assert page.status_code == 404


def test_daily_cap_answers_429_with_the_reset_time(served, tmp_path):
    token = served["tokens"]["gamma"]
    data = predictions_zip(ground_truth(served["home"]), tmp_path)
    ids = [upload(served["url"], token, data).json()["id"] for _ in range(3)]
    over = upload(served["url"], token, data)
    assert over.status_code == 429
    reset = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z")
    assert over.json()["detail"] == f"daily limit of 3 submissions reached; resets at {reset}"
    assert 0 < int(over.headers["retry-after"]) <= 86400
    for sid in ids:
        assert wait_final(served["url"], token, sid)["state"] == "scored"


def _zip(members: dict[str, bytes], *, symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def test_size_caps_and_hostile_archives_are_refused(served):
    url, token = served["url"], served["tokens"]["beta"]
    before = len(_get(served, "/api/team", token).json()["submissions"])
    big = upload(url, token, b"\0" * (2 << 20))
    assert big.status_code == 413 and "limit" in big.json()["detail"]

    def chunks():  # a valid multipart body, sent chunked (no Content-Length)
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n\r\n'
        for _ in range(40):
            yield b"\1" * (64 << 10)
        yield b"\r\n--x--\r\n"

    streamed = httpx.post(
        f"{url}/api/challenges/{CHALLENGE}/submissions",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "multipart/form-data; boundary=x",
        },
        content=chunks(),
        timeout=60,
    )
    assert streamed.status_code == 413
    cases = {
        "zip bomb?": _zip({"p.zarr/big": b"\0" * (30 << 20)}),
        "path traversal": _zip({"p.zarr/zarr.json": b"{}", "../../escape.txt": b"owned"}),
        "symbolic link": _zip({"p.zarr/zarr.json": b"{}"}, symlink="p.zarr/link"),
        "absolute path": _zip({"/etc/cron.d/x": b"owned"}),
    }
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as tf:
        info = tarfile.TarInfo("p.zarr/link")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    cases["symbolic link "] = tar.getvalue()
    for expected, data in cases.items():
        r = upload(url, token, data, filename="hostile.zip")
        assert r.status_code == 422, (expected, r.text)
        assert any(expected.strip() in p for p in r.json()["detail"]["problems"]), r.text
    aliases = httpx.post(
        f"{url}/api/challenges/{CHALLENGE}/submissions",
        headers={"Authorization": f"Bearer {token}"},
        data={"manifest": "a: &a [1, 2]\nb: [*a, *a]\n"},
        files={"file": ("x.csv", b"x")},
        timeout=30,
    )
    assert aliases.status_code == 422 and "anchors (&name) are not allowed" in aliases.text
    assert len(_get(served, "/api/team", token).json()["submissions"]) == before


def test_hostile_models_are_rejected_and_a_runaway_times_out(served, tmp_path):
    from tests.submissions.models import (
        Spin,
        Threshold,
        evil_pickle,
        respelled_save_on_load,
        script,
    )

    url, token = served["url"], served["tokens"]["models"]
    marker = tmp_path / "unpickled"
    written = tmp_path / "written"
    models = {
        "pickle": (evil_pickle(tmp_path / "m.pt", marker).read_bytes(), "pickle-based checkpoint"),
        "file access": (
            respelled_save_on_load(tmp_path, written, "torch . save(").read_bytes(),
            "calls torch.save (file access is not allowed)",
        ),
        "network": (
            respelled_save_on_load(tmp_path, written, "ops.socket.connect(").read_bytes(),
            "calls custom op socket::connect",
        ),
    }
    sids = {}
    for what, (data, _) in models.items():
        r = upload(url, token, data, filename=f"{what}.pt", kind="torchscript")
        assert r.status_code == 202, r.text
        sids[what] = r.json()["id"]
    for what, (_, expected) in models.items():
        view = wait_final(url, token, sids[what])
        assert view["state"] == "rejected" and any(expected in r for r in view["reasons"]), view
        assert "the model was not run" in view["reasons"][-1]
    assert not marker.exists() and not written.exists()
    # the daily cap (3) is used up; a second models team runs a good model and a runaway one
    from cellbench.server.accounts import add_team
    from cellbench.server.db import make_engine

    engine = make_engine(served["db"])
    token2 = add_team(engine, "models2")
    engine.dispose()
    good_model = script(Threshold(), tmp_path / "t.pt").read_bytes()
    spin_model = script(Spin(), tmp_path / "s.pt").read_bytes()
    good = upload(url, token2, good_model, filename="t.pt", kind="torchscript")
    spin = upload(url, token2, spin_model, filename="s.pt", kind="torchscript")
    view = wait_final(url, token2, good.json()["id"])
    assert view["state"] == "scored" and view["runtime_s"] > 0 and view["peak_memory_mb"] > 10
    runaway = wait_final(url, token2, spin.json()["id"])
    assert runaway["state"] == "timed-out"
    assert (
        "model run stopped at the wall-clock limit of 8 s after 0 of 6 samples"
        in (runaway["reasons"][0])
    )


def test_html_in_every_user_field_is_escaped(served, tmp_path):
    from cellbench.server.accounts import AccountError, add_team
    from cellbench.server.db import make_engine

    engine = make_engine(served["db"])
    with pytest.raises(AccountError):
        add_team(engine, HOSTILE)
    engine.dispose()
    token = served["tokens"]["hostile"]
    data = predictions_zip(ground_truth(served["home"]), tmp_path)
    fields = {
        "name": HOSTILE,
        "authors": [HOSTILE, "B"],
        "training_data": HOSTILE,
        "hardware": HOSTILE,
        "license": HOSTILE,
        "notes": HOSTILE,
        "paper": HOSTILE,
    }
    r = upload(served["url"], token, data, filename=f"{HOSTILE}.zip", **fields)
    assert r.status_code == 202, r.text
    view = wait_final(served["url"], token, r.json()["id"])
    assert view["name"] == HOSTILE and view["state"] == "scored"
    cookie = _sign_in(served, token)
    pages = [
        f"/submissions/{view['id']}",
        "/team",
        f"/challenges/{CHALLENGE}/leaderboard",
        f"/challenges/{CHALLENGE}",
        "/",
    ]
    for path in pages:
        text = httpx.get(served["url"] + path, cookies=cookie, timeout=30).text
        assert "<script>alert" not in text and "<img src=x" not in text, path
    text = httpx.get(f"{served['url']}/submissions/{view['id']}", cookies=cookie).text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in text


def _hidden_label_secrets(home: Path) -> list[str]:
    """What must never appear outside: label digests, label chunk bytes, the salt."""
    from cellbench.store.variants import hidden_label_manifest
    from cellbench.store.zarr_store import DatasetStore

    store = DatasetStore.open(home / "toy.zarr")
    manifest_ = hidden_label_manifest(store, "test")
    digests = [e["sha256"] for e in manifest_["arrays"].values()]
    salt = json.loads(next((home / "server" / "challenges").glob("*/secret.json")).read_text())
    return [*digests, salt["salt"]]


def test_hidden_labels_never_leave_the_server(served, tmp_path):
    home = served["home"]
    secrets_ = _hidden_label_secrets(home)
    truth = ground_truth(home)
    token = served["tokens"]["alpha"]
    organiser = served["tokens"]["organiser"]
    seen: list[bytes] = []
    api = [
        "/api/challenges",
        f"/api/challenges/{CHALLENGE}",
        f"/api/challenges/{CHALLENGE}/leaderboard",
        "/api/keys",
        "/api/team",
        "/healthz",
        "/",
        f"/challenges/{CHALLENGE}",
        f"/challenges/{CHALLENGE}/leaderboard",
    ]
    for t in (None, token, organiser):
        for path in api:
            seen.append(_get(served, path, t).content)
    for sub in _get(served, "/api/team", organiser).json()["submissions"]:
        seen.append(_get(served, f"/api/submissions/{sub['id']}", organiser).content)
        seen.append(_get(served, f"/receipts/{sub['id']}.json").content)
    seen.append(_get(served, "/api/status", organiser).content)
    archive = _get(served, f"/api/challenges/{CHALLENGE}/public-store").content
    blob = b"\n".join(seen)
    for secret in secrets_:
        assert secret.encode() not in blob and secret.encode() not in archive
    assert b"per_sample" not in blob and b"confusion" not in blob
    # the public store: the hidden split has images and declared metadata only
    with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
        tf.extractall(tmp_path / "public", filter="data")
    from cellbench.store.zarr_store import DatasetStore

    public = DatasetStore.open(next((tmp_path / "public").iterdir()))
    assert public.verify() == []
    for sid in truth:
        sample = public.sample(sid)
        assert sample.instances is None and sample.semantic is None and sample.label is None
        assert set(sample.metadata) <= {"plate"}
    train = public.sample(public.sample_ids("train")[0])
    assert train.instances is not None and "site" in train.metadata
    # no label array of a hidden sample is in the archive at all
    with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
        names = tf.getnames()
    assert not [n for n in names if any(f"images/{sid}/labels" in n for sid in truth)]


def test_cli_submit_status_and_public_pull(served, tmp_path):
    from cellbench.predictions import Prediction, PredictionWriter

    home, url = served["home"], served["url"]
    truth = ground_truth(home)
    preds = tmp_path / "preds.zarr"
    with PredictionWriter(preds, "instance-segmentation", "toy-nuclei", "1.0", "test") as w:
        for sid, mask in truth.items():
            w.add(Prediction(sid, mask=mask))
    (tmp_path / "m.yaml").write_text(manifest(name="cli entry", submission="preds.zarr"))
    run_env = env(home, CELLBENCH_TOKEN=served["tokens"]["beta"])
    run = subprocess.run(
        [sys.executable, "-m", "cellbench", "submit", str(tmp_path / "m.yaml"), "--server", url],
        capture_output=True,
        text=True,
        env=run_env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "cli entry: scored" in run.stdout and "public coco_ap/ap = 1.0000" in run.stdout
    assert "/receipts/" in run.stdout
    status = subprocess.run(
        [sys.executable, "-m", "cellbench", "server", "status", "--db", served["db"]],
        capture_output=True,
        text=True,
        env=env(home),
        timeout=120,
    )
    assert status.returncode == 0 and f"challenges: {CHALLENGE}" in status.stdout, status.stderr
    assert "workers: 1" in status.stdout
    remote = subprocess.run(
        [sys.executable, "-m", "cellbench", "server", "status", "--server", url, "--json"],
        capture_output=True,
        text=True,
        env=env(home, CELLBENCH_TOKEN=served["tokens"]["organiser"]),
        timeout=120,
    )
    assert remote.returncode == 0 and json.loads(remote.stdout)["submissions"]["scored"] >= 1
    fresh = tmp_path / "participant"
    pull = subprocess.run(
        [
            sys.executable,
            "-m",
            "cellbench",
            "datasets",
            "pull",
            "toy-nuclei@1.0",
            "--public",
            "--server",
            url,
        ],
        capture_output=True,
        text=True,
        env=env(fresh),
        timeout=300,
    )
    assert pull.returncode == 0, pull.stderr
    info = _get(served, f"/api/challenges/{CHALLENGE}").json()
    assert f"label commitment {info['label_commitment']}" in pull.stdout
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "from cellbench.registry import load; s = load('toy-nuclei@1.0'); "
            "ids = s.sample_ids('test'); print(len(ids), sum(s.sample(i).instances is None "
            "for i in ids), s.card['variant']['kind'])",
        ],
        capture_output=True,
        text=True,
        env=env(fresh),
        timeout=120,
    )
    assert check.stdout.split() == ["6", "6", "public"], check.stderr


def test_client_refuses_a_submission_named_by_url_before_any_request(tmp_path):
    """A challenge server is sent the files themselves: a manifest naming a prediction set on
    object storage is refused in one line by the client, before anything is asked of the
    server (the address here has no server: a request would be a ServerError)."""
    from cellbench.errors import ValidationError
    from cellbench.server.client import Client

    (tmp_path / "m.yaml").write_text(manifest(submission="s3://bucket/team/preds.zarr"))
    with pytest.raises(ValidationError) as err:
        Client("http://127.0.0.1:9", token="t").submit(tmp_path / "m.yaml", challenge="c")
    assert err.value.problems == [
        "submission: s3://bucket/team/preds.zarr is a URL; a challenge server is sent the files "
        "themselves: copy them here and name the local folder or file"
    ]
