"""The repository commands through the real command line: the installed ``quiver``
entry point in a subprocess, on the fraud example."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

QUIVER = str(Path(sys.executable).parent / "quiver")


def quiver(*args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([QUIVER, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "QUIVER_USER": "ci", "COLUMNS": "200", "NO_COLOR": "1"})
    if ok:
        assert r.returncode == 0, f"quiver {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    return r


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`quiver init` then `quiver apply`, once for the module."""
    root = tmp_path_factory.mktemp("cli")
    r = quiver("init", "repo", "--scale", "tiny", cwd=root)
    assert "created the fraud example" in r.stdout
    repo = root / "repo"
    assert (repo / "quiver.yaml").exists() and (repo / "features.py").exists()
    assert (repo / "data" / "transactions.parquet").exists()
    plan = json.loads(quiver("plan", "--json", cwd=repo).stdout)
    assert {(c["kind"], c["name"], c["action"]) for c in plan["changes"]} >= {
        ("feature_view", "user_profile", "add"), ("feature_service", "fraud_model", "add")}
    out = quiver("apply", cwd=repo).stdout
    assert "+ feature_view user_profile add v1" in out and "plan: " in out
    return repo


def test_features_list_describe_search(applied: Path) -> None:
    rows = json.loads(quiver("features", "list", "--json", cwd=applied).stdout)
    by_ref = {r["feature"]: r for r in rows}
    assert by_ref["user_profile:credit_limit"]["dtype"] == "Float64"
    assert by_ref["user_tx:amount_sum_10m"]["version"] == 1
    out = quiver("features", "describe", "fraud_model", cwd=applied).stdout
    assert "fraud_model (feature_service, version 1)" in out
    assert "user_profile:credit_limit" in out and "user_profile v1" in out
    d = json.loads(quiver("features", "describe", "user_tx:amount_sum_1h", "--json", cwd=applied).stdout)
    assert d["feature"]["aggregation"] == "sum(amount) over 1h" and d["versions"][0]["applied_by"] == "ci"
    found = json.loads(quiver("features", "search", "merchants", "--json", cwd=applied).stdout)
    assert [r["name"] for r in found] == ["merchant_stats"]  # owner and tag


def test_lineage_and_catalog(applied: Path) -> None:
    out = quiver("lineage", "user_profile", cwd=applied).stdout
    assert "file:data/user_profile.parquet -> source:user_profile" in out
    assert "view:user_profile -> service:fraud_model" in out
    out = quiver("catalog", cwd=applied).stdout
    assert "fraud_model" in out and "user_tx" in out and "risk@example.com" in out


def test_plan_shows_field_diffs_and_breaking_changes(applied: Path, tmp_path: Path) -> None:
    features = applied / "features.py"
    original = features.read_text()
    try:
        features.write_text(original.replace('Field("credit_limit", types.Float64)', 'Field("credit_limit", types.Int64)'))
        out = quiver("plan", cwd=applied).stdout
        assert "~ feature_view user_profile new version v1 -> v2" in out
        assert "schema[credit_limit].dtype: 'Float64' -> 'Int64'" in out
        assert "BREAKING: feature 'credit_limit' changed dtype from Float64 to Int64" in out
    finally:
        features.write_text(original)
    assert "plan: no changes" in quiver("plan", cwd=applied).stdout


def test_errors_are_one_line_with_exit_code_1(applied: Path, tmp_path: Path) -> None:
    r = quiver("features", "describe", "user_profil", cwd=applied, ok=False)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip() == "error: nothing named 'user_profil' in the registry. Did you mean 'user_profile', " \
                               "'user_home', 'user_tx'?"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "quiver.yaml").write_text("project: p\nregistyr: r.db\n")
    r = quiver("-r", str(bad), "plan", cwd=tmp_path, ok=False)
    assert r.returncode == 1
    assert "unknown key 'registyr'. Did you mean 'registry'?" in r.stderr
    r = quiver("-r", str(tmp_path / "nowhere"), "features", "list", cwd=tmp_path, ok=False)
    assert r.returncode == 1 and "quiver init" in r.stderr
