"""Tests of learner.config: field docstrings as --help, flags into sections, from_dict, validate."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from learner.config import (
    SECTIONS,
    TrainConfig,
    build_parser,
    config_from_args,
    field_docs,
)


def all_fields():
    cfg = TrainConfig()
    return [(section, f) for section in SECTIONS for f in dataclasses.fields(getattr(cfg, section))]


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def parse(*argv: str) -> TrainConfig:
    return config_from_args(build_parser().parse_args(list(argv)))


def test_sections_are_the_dataclass_fields_of_train_config():
    assert tuple(f.name for f in dataclasses.fields(TrainConfig)) == SECTIONS


def test_every_field_has_a_docstring():
    cfg = TrainConfig()
    for section in SECTIONS:
        cls = type(getattr(cfg, section))
        docs = field_docs(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        assert sorted(docs) == sorted(names), f"{cls.__name__}: undocumented {set(names) - set(docs)}"
        for name in names:
            assert len(docs[name]) > 10, f"{section}.{name} has a stub docstring: {docs[name]!r}"
            assert "\n" not in docs[name] and "  " not in docs[name]  # whitespace collapsed


def test_field_docs_reads_the_string_under_each_field():
    from rollout.world import WorldConfig

    docs = field_docs(WorldConfig)
    assert docs["slate_size"] == "Items recommended per step (LERL: 6)."
    assert docs["rho"].startswith("Weight of the intra-slate similarity penalty")


def test_field_names_are_unique_across_sections():
    names = [f.name for _, f in all_fields()]
    assert len(names) == len(set(names))


def test_every_field_is_a_flag_with_its_docstring_in_help(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    text = build_parser().format_help()
    squashed = re.sub(r"\s+", "", text)
    for section, f in all_fields():
        doc = field_docs(type(getattr(TrainConfig(), section)))[f.name]
        assert re.search(rf"(?<![\w-]){re.escape(flag(f.name))}(?![\w-])", text), f.name
        assert re.sub(r"\s+", "", doc) in squashed, f"help of {flag(f.name)} lacks its docstring"
    for title in ("simulated world:", "policy network:", "PPO:", "rollouts and planning:"):
        assert title in text


def test_field_types_match_their_defaults():
    # The flag's type comes from the default: a float field with an int default would reject "0.5".
    cfg = TrainConfig()
    for section, f in all_fields():
        default = getattr(getattr(cfg, section), f.name)
        assert type(default).__name__ == f.type, f"{section}.{f.name}: {f.type} field, default {default!r}"


def test_no_flags_give_the_defaults():
    assert parse() == TrainConfig()


def test_flags_parse_into_the_right_section():
    cfg = parse("--iterations", "7", "--address", "auto", "--learner-device", "cpu",
                "--dataset", "synthetic", "--num-items", "300", "--rho", "0.1", "--world-seed", "5",
                "--model-dim", "64", "--lr", "0.01", "--normalize-advantages", "false",
                "--users-per-actor", "8", "--use-planner", "no", "--planner-timeout-s", "0.5")
    assert (cfg.run.iterations, cfg.run.address, cfg.run.learner_device) == (7, "auto", "cpu")
    assert (cfg.world.num_items, cfg.world.rho, cfg.world.world_seed) == (300, 0.1, 5)
    assert cfg.policy.model_dim == 64
    assert cfg.ppo.lr == 0.01 and cfg.ppo.normalize_advantages is False
    assert cfg.rollout.users_per_actor == 8 and cfg.rollout.use_planner is False
    assert cfg.rollout.planner_timeout_s == 0.5
    # Everything else stayed at its default.
    defaults = TrainConfig()
    assert cfg.world.num_categories == defaults.world.num_categories
    assert cfg.ppo.gamma == defaults.ppo.gamma


@pytest.mark.parametrize("text,value", [("true", True), ("1", True), ("ON", True), ("False", False), ("0", False)])
def test_bool_flags(text, value):
    assert parse("--send-titles", text).rollout.send_titles is value


@pytest.mark.parametrize("argv", [["--use-planner", "maybe"], ["--num-items", "1.5"], ["--no-such-flag", "1"]])
def test_bad_flags_exit_with_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as info:
        parse(*argv)
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_from_dict_round_trips_and_rejects_unknown_names(tmp_path):
    cfg = parse("--dataset", "synthetic", "--num-items", "300", "--lr", "0.02", "--planner-address", "in-process")
    path = tmp_path / "config.json"
    cfg.save(path)
    assert TrainConfig.from_dict(json.loads(path.read_text())) == cfg
    assert TrainConfig.from_dict({"ppo": {"epochs": 2}}).ppo.epochs == 2

    with pytest.raises(ValueError, match="unknown config section 'wrld'"):
        TrainConfig.from_dict({"wrld": {"num_items": 3}})
    with pytest.raises(ValueError, match=r"unknown config key world\.num_itemz"):
        TrainConfig.from_dict({"world": {"num_itemz": 3}})
    with pytest.raises(ValueError, match=r"unknown config key ppo\.num_items"):
        TrainConfig.from_dict({"ppo": {"num_items": 3}})  # a real field, but in another section


def test_default_config_validates():
    TrainConfig().validate()


@pytest.mark.parametrize("section,changes,field", [
    ("rollout", {"plan_categories": 21}, "plan_categories"),
    ("rollout", {"plan_categories": 0}, "plan_categories"),
    ("rollout", {"num_rollout_actors": 0}, "num_rollout_actors"),
    ("rollout", {"users_per_actor": 0}, "users_per_actor"),
    ("rollout", {"planner_timeout_s": 0.0}, "planner_timeout_s"),
    ("run", {"learner_device": "gpu"}, "learner_device"),
    ("run", {"iterations": 0}, "iterations"),
    ("world", {"num_users": 0}, "num_users"),
    ("ppo", {"gamma": 2.0}, "gamma"),
    ("policy", {"num_heads": 3}, "num_heads"),
])
def test_validate_names_the_field(section, changes, field):
    cfg = TrainConfig()
    setattr(cfg, section, dataclasses.replace(getattr(cfg, section), **changes))
    with pytest.raises(ValueError, match=field):
        cfg.validate()


def test_plan_categories_is_checked_against_the_worlds_categories():
    cfg = parse("--dataset", "synthetic", "--num-categories", "6", "--plan-categories", "6")
    cfg.validate()
    cfg = parse("--dataset", "synthetic", "--num-categories", "6", "--plan-categories", "7")
    with pytest.raises(ValueError, match="plan_categories=7 exceeds num_categories=6"):
        cfg.validate()


def test_algorithm_ppo_is_flat_ppo_and_unknown_algorithms_are_refused() -> None:
    from learner.config import TrainConfig

    cfg = TrainConfig()
    cfg.run.algorithm = "ppo"
    cfg.validate()
    assert cfg.rollout.use_planner is False
    cfg.run.algorithm = "dqn"
    with pytest.raises(ValueError, match="algorithm must be one of lerl, ppo, laac, ilrec"):
        cfg.validate()
