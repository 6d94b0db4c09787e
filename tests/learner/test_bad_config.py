"""Bad configuration and bad data (issue 8, point 4): `python -m learner.main` refuses them before any
work starts (no Ray, no run directory), with exit code 2 and a one-line message naming the option,
key or file. Most cases run the CLI in-process with Ray's start replaced by a tripwire; a few run
the real entry point as a user would."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import learner.main as main
import learner.skeleton as skeleton

REPO = Path(__file__).resolve().parents[2]
SHARED_ML100K = REPO / ".." / "shared" / "data" / "ml-100k"
needs_ml100k = pytest.mark.skipif(not (SHARED_ML100K / "u.data").is_file(),
                                  reason=f"the MovieLens-100K test files are not at {SHARED_ML100K}")
ML = ["--dataset", "ml-100k", "--data-dir", str(SHARED_ML100K)]


@pytest.fixture
def refuse(monkeypatch, tmp_path, capsys):
    """Runs the CLI with `argv` and returns its one-line error; fails if Ray would have started."""

    def tripwire(cfg):
        raise AssertionError("Ray was started for a run that should have been refused")

    monkeypatch.setattr(skeleton, "init_ray", tripwire)
    run_dir = tmp_path / "run"

    def run(argv: list[str]) -> str:
        try:
            code = main.cli([*argv, "--run-dir", str(run_dir), "--iterations", "2"])
        except SystemExit as exc:  # option validation exits like argparse does
            code = exc.code
        err = capsys.readouterr().err.strip()
        assert code == 2, err
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert not run_dir.exists()
        return err

    return run


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "synthetic", "--num-users", "0"], "num_users must be >= 1, got 0"),
    (["--dataset", "synthetic", "--num-items", "-5"], "num_items must be >= 1, got -5"),
    (["--slate-size", "-1"], "slate_size must be >= 1, got -1"),
    (["--dataset", "synthetic", "--slate-size", "5000"], "slate_size=5000 exceeds num_items=1000"),
    # The generated world's knobs on a logged world are refused, not silently ignored.
    (["--num-items", "300", "--num-users", "40"], "num_items, num_users apply only to dataset=synthetic"),
    (["--users-per-actor", "-3"], "users_per_actor must be >= 1, got -3"),
    (["--plan-categories", "0"], "plan_categories must be >= 1, got 0"),
    (["--dataset", "synthetic", "--plan-categories", "30", "--plan-pool", "30"], "plan_categories=30 exceeds num_categories=20"),
    (["--num-rollout-actors", "0"], "num_rollout_actors must be >= 1"),
    (["--batches-per-iteration", "-1"], "batches_per_iteration must be >= 0, got -1"),
    (["--learner-num-gpus", "-2"], "learner_num_gpus must be >= 0, or -1 for automatic"),
    (["--num-learners", "0"], "num_learners must be >= 1, got 0"),
    (["--rollout-num-cpus", "-1"], "rollout_num_cpus must be >= 0, got -1"),
    (["--dataset", "synthetic", "--feature-noise", "-0.5"], "feature_noise must be >= 0"),
    (["--dataset", "movielens"], "dataset must be one of synthetic, ml-100k, kuairand-pure, kuairec, atomic, got 'movielens'"),
    (["--chaos-kill-rollout-every-s", "-1"], "chaos_kill_rollout_every_s must be >= 0"),
    (["--chaos-planner-hang-every", "5", "--chaos-planner-hang-s", "1", "--planner-timeout-s", "2"],
     "chaos_planner_hang_s=1 must exceed planner_timeout_s=2"),
    # A mask that can never fill a slate: 20 items in 20 categories, 4 categories allowed, slates of 6.
    (["--dataset", "synthetic", "--num-items", "20", "--num-categories", "20", "--plan-categories", "4"],
     "the largest 4 categories of the synthetic world hold 4 items, fewer than slate_size=6"),
])
def test_impossible_values_are_refused_naming_the_option(refuse, argv, message):
    assert message in refuse(argv)


@needs_ml100k
@pytest.mark.parametrize("argv, message", [
    (["--slate-size", "2000"], "slate_size=2000 exceeds the ml-100k catalog's 1682 items"),
    (["--plan-categories", "20", "--plan-pool", "20"], "plan_categories=20 exceeds the 19 categories of the ml-100k world"),
])
def test_values_the_loaded_catalog_cannot_meet_are_refused_before_ray(refuse, argv, message):
    assert message in refuse([*ML, *argv])


@needs_ml100k
@pytest.mark.parametrize("damage, name, message", [
    ("truncate", "u.data", "the file ends in the middle of a line"),
    ("columns", "u.data", "line 3: expected 4 tab-separated fields"),
    ("id", "u.data", "line 5: item_id must be an integer, got 'abc'"),
    ("missing", "u.item", "missing"),
])
def test_malformed_data_files_are_refused_naming_the_file(refuse, tmp_path, damage, name, message):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    for file in ("u.data", "u.item", "u.genre", "u.info"):
        shutil.copy(SHARED_ML100K / file, folder / file)
    data = (folder / "u.data").read_text()
    lines = data.splitlines()
    if damage == "truncate":
        (folder / "u.data").write_text(data[: data.index("\n", 1000) - 2])
    elif damage == "columns":
        lines[2] = lines[2].replace("\t", " ", 1)
    elif damage == "id":
        lines[4] = "\t".join([lines[4].split("\t")[0], "abc", *lines[4].split("\t")[2:]])
    else:
        (folder / name).unlink()
    if damage in ("columns", "id"):
        (folder / "u.data").write_text("\n".join(lines) + "\n")
    err = refuse(["--dataset", "ml-100k", "--data-dir", str(folder)])
    assert str(folder / name) in err and message in err


@pytest.mark.parametrize("text, message", [
    ("run: {iteratons: 3}\n", "unknown config key run.iteratons"),
    ("wrld: {num_items: 3}\n", "unknown key(s) wrld"),
    ("world: {dataset: synthetic, num_users: 0}\n", "num_users must be >= 1, got 0"),
    ("seeds: [-1]\n", "seeds must be a non-empty list of integers >= 0"),
    ("run: [1, 2\n", "not valid YAML"),
])
def test_experiment_files_with_unknown_keys_or_bad_values_are_refused_naming_the_file(refuse, tmp_path, text,
                                                                                     message):
    path = tmp_path / "row.yaml"
    path.write_text(text)
    err = refuse(["--config", str(path)])
    assert str(path) in err and message in err


def test_a_run_config_json_with_an_unknown_key_is_refused(refuse, tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"run": {"iterations": 2}, "rollout": {"users_per_actr": 8}}')
    err = refuse(["--config", str(path)])
    assert str(path) in err and "unknown config key rollout.users_per_actr" in err


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "synthetic", "--num-users", "0"], "num_users must be >= 1, got 0"),
    (["--dataset", "ml-100k", "--data-dir", "{tmp}/nowhere"], "missing {tmp}/nowhere/u.data"),
    (["--config", "{tmp}/row.yaml"], "unknown config key policy.model_dimm"),
])
def test_the_real_entry_point_exits_2_with_one_line(tmp_path, argv, message):
    (tmp_path / "row.yaml").write_text("policy: {model_dimm: 64}\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "learner.main", *argv, "--run-dir", str(tmp_path / "run")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1 and message.replace("{tmp}", str(tmp_path)) in proc.stderr
    # Refused up front, not after starting anything: no run directory, no world built, no Ray.
    assert "run directory:" not in proc.stdout and not (tmp_path / "run").exists()
    assert "world:" not in proc.stdout


def test_only_lerl_and_ppo_train_in_an_llm_users_world() -> None:
    from learner.config import TrainConfig

    cfg = TrainConfig()
    cfg.world.user_model = "hybrid"
    cfg.run.algorithm = "laac"
    with pytest.raises(ValueError, match="--eval-user-model hybrid"):
        cfg.validate()
    cfg.run.algorithm = "ppo"
    cfg.validate()
