"""The default model is a current one: the pinned openai SDK lists it among its chat models and
announces no shutdown date for it (the SDK's own list of deprecated values)."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import openai.types.shared.chat_model as chat_model
import yaml

from handler.settings import Settings

ROOT = Path(__file__).parent.parent


def models_with_announced_shutdown() -> set[str]:
    source = Path(chat_model.__file__).read_text()
    start = source.index('"""Deprecated values:') + 3
    deprecated = source[start : source.index('"""', start)]
    return set(re.findall(r'"([^"\s]+)"', deprecated))


def test_the_default_model_has_no_announced_shutdown():
    default = Settings(_env_file=None).default_model
    assert default in typing.get_args(chat_model.ChatModel)
    assert "gpt-4o-mini" in models_with_announced_shutdown()  # the reading works
    assert default not in models_with_announced_shutdown()


def test_the_template_defaults_to_the_same_model():
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=Loader)
    default = Settings(_env_file=None).default_model
    assert template["Parameters"]["DefaultModel"]["Default"] == default
    assert template["Parameters"]["AllowedModels"]["Default"] == default
