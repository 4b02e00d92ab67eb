"""Settings: one typed object from the environment, errors that name the variable, secrets redacted."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from retrainer.logs import RedactingFilter
from retrainer.redact import redact, url_without_query
from retrainer.settings import Settings, load_settings
from shared.settings import RegistryLocation, SettingsError, load_registry_location

SECRET_KEY = "c2VjcmV0LWtleS1ub3QtdG8tYmUtbG9nZ2Vk"
CONNECTION = f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={SECRET_KEY};EndpointSuffix=core.windows.net"


def test_missing_connection_string_names_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("STORAGE_ACCOUNT_CONNECTION_STRING", "DATASTORE", "DATASTORE__blobServiceUri"):
        monkeypatch.delenv(variable, raising=False)
    settings = load_settings()
    with pytest.raises(SettingsError, match=r"DATASTORE__blobServiceUri.*STORAGE_ACCOUNT_CONNECTION_STRING is not set"):
        settings.storage_connection()


@pytest.mark.parametrize("variable", ["DATASTORE", "STORAGE_ACCOUNT_CONNECTION_STRING"])
def test_a_malformed_connection_string_is_refused_at_start_naming_the_variable_set_and_not_its_value(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    for name in ("STORAGE_ACCOUNT_CONNECTION_STRING", "DATASTORE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, f"AccountName=acct;{SECRET_KEY}")
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert str(refused.value).startswith(f"invalid configuration: {variable} is not a storage connection string")
    assert SECRET_KEY not in str(refused.value)
    monkeypatch.setenv(variable, CONNECTION)
    assert load_settings().STORAGE_ACCOUNT_CONNECTION_STRING is not None


def test_the_identity_based_datastore_connection_needs_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STORAGE_ACCOUNT_CONNECTION_STRING", raising=False)
    monkeypatch.setenv("DATASTORE", CONNECTION)
    assert load_settings().storage_connection().connection_string == CONNECTION, "the blob trigger's name works too"
    monkeypatch.delenv("DATASTORE")
    monkeypatch.setenv("DATASTORE__blobServiceUri", "https://acct.blob.core.windows.net")
    with pytest.raises(SettingsError, match="DATASTORE__tableServiceUri is not set"):
        load_settings().storage_connection()
    monkeypatch.setenv("DATASTORE__tableServiceUri", "https://acct.table.core.windows.net")
    monkeypatch.setenv("DATASTORE__clientId", "33333333-3333-3333-3333-333333333333")
    connection = load_settings().storage_connection()
    assert connection.connection_string is None and connection.client_id == "33333333-3333-3333-3333-333333333333"
    assert connection.table_service_uri == "https://acct.table.core.windows.net"
    monkeypatch.setenv("DATASTORE__blobServiceUri", "http://acct.blob.core.windows.net")
    with pytest.raises(SettingsError, match="DATASTORE__blobServiceUri"):
        load_settings()


def test_backend_is_local_until_the_workspace_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZUREML_WORKSPACE_NAME", "WORKSPACE_BACKEND"):
        monkeypatch.delenv(variable, raising=False)
    assert load_settings().backend() == "local"
    monkeypatch.setenv("WORKSPACE_BACKEND", "azureml")
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "00000000-0000-0000-0000-000000000000")
    with pytest.raises(SettingsError, match="AZURE_RESOURCE_GROUP, AZUREML_WORKSPACE_NAME not set"):
        load_settings().backend()
    monkeypatch.setenv("AZURE_RESOURCE_GROUP", "rg")
    monkeypatch.setenv("AZUREML_WORKSPACE_NAME", "ws")
    monkeypatch.setenv("WORKSPACE_BACKEND", "auto")
    assert load_settings().backend() == "azureml"
    monkeypatch.setenv("WORKSPACE_BACKEND", "cloud")
    with pytest.raises(SettingsError, match="WORKSPACE_BACKEND"):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value"),
    [("STORAGE_ACCOUNT_CONTAINER_NAME", "Bad_Name"), ("IMAGE_FOLDER", "../escape"), ("LABEL_FOLDER", "a//b")],
)
def test_invalid_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv("STORAGE_ACCOUNT_CONNECTION_STRING", CONNECTION)
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable) as caught:
        load_settings()
    assert SECRET_KEY not in str(caught.value)


NUMBER_SETTINGS = sorted(
    name for name, field in Settings.model_fields.items() if field.annotation in (float, float | None, int, int | None)
)


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_every_number_setting_refuses_infinity_and_nan_at_start(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """'inf' minutes would pass a lower bound and overflow the first timedelta the timer builds from them."""
    monkeypatch.setenv("STORAGE_ACCOUNT_CONNECTION_STRING", CONNECTION)
    accepted = []
    for variable in NUMBER_SETTINGS:
        with monkeypatch.context() as scoped:
            scoped.setenv(variable, value)
            try:
                load_settings()
            except SettingsError as error:
                assert variable in str(error)
            else:
                accepted.append(variable)
    assert len(NUMBER_SETTINGS) > 20 and accepted == []


def test_secrets_never_show_when_settings_are_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_ACCOUNT_CONNECTION_STRING", CONNECTION)
    settings = load_settings()
    assert SECRET_KEY not in repr(settings) and SECRET_KEY not in str(settings)
    assert SECRET_KEY not in settings.model_dump_json()
    assert settings.storage_connection().connection_string == CONNECTION
    assert SECRET_KEY not in repr(settings.storage_connection())
    assert (settings.IMAGE_FOLDER, settings.LABEL_FOLDER) == ("data/images", "data/labels")


def test_redact_removes_keys_and_sas_signatures() -> None:
    url = "https://acct.blob.core.windows.net/c/set.zip?sv=2024-01-01&sig=abc%2Fdef&se=2030"
    assert "abc%2Fdef" not in redact(url) and "sig=***" in redact(url)
    assert SECRET_KEY not in redact(CONNECTION)
    assert url_without_query(url) == "https://acct.blob.core.windows.net/c/set.zip"


def test_log_records_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("redaction-test")
    logger.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO, logger="redaction-test"):
        logger.info("connecting with %s", CONNECTION)
    assert SECRET_KEY not in caplog.text and "AccountKey=***" in caplog.text


def test_a_runs_deadline_follows_from_training_and_scoring_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from retrainer.settings import PIPELINE_OVERHEAD_MINUTES

    for variable in ("RETRAIN_RUN_TIMEOUT_MINUTES", "TRAINING_JOB_TIMEOUT_MINUTES", "PROMOTION_SCORING_MINUTES"):
        monkeypatch.delenv(variable, raising=False)
    assert load_settings().run_timeout_minutes() == 180 + 60 + PIPELINE_OVERHEAD_MINUTES
    longer = load_settings(TRAINING_JOB_TIMEOUT_MINUTES=600, PROMOTION_SCORING_MINUTES=90)
    assert longer.run_timeout_minutes() == 600 + 90 + PIPELINE_OVERHEAD_MINUTES, "a longer training never times out"
    assert load_settings(RETRAIN_RUN_TIMEOUT_MINUTES=45).run_timeout_minutes() == 45


def test_the_tag_step_scores_on_the_gpu_compute_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("PROMOTION_COMPUTE_NAME", "TRAINING_GPU_COMPUTE_NAME"):
        monkeypatch.delenv(variable, raising=False)
    assert load_settings().promotion_compute() == "gpu-cluster"
    assert load_settings(TRAINING_GPU_COMPUTE_NAME="a100").promotion_compute() == "a100"
    assert load_settings(PROMOTION_COMPUTE_NAME="cpu-cluster").promotion_compute() == "cpu-cluster"


REGISTRY_FIELDS = {
    "WORKSPACE_BACKEND",
    "AZURE_SUBSCRIPTION_ID",
    "AZURE_RESOURCE_GROUP",
    "AZUREML_WORKSPACE_NAME",
    "LOCAL_WORKSPACE_DIR",
    "DEFAULT_IDENTITY_CLIENT_ID",
}


def test_the_registry_location_is_six_fields_the_settings_inherit_and_never_redeclare() -> None:
    assert set(RegistryLocation.model_fields) == REGISTRY_FIELDS
    assert issubclass(Settings, RegistryLocation) and set(Settings.model_fields) > REGISTRY_FIELDS
    assert not REGISTRY_FIELDS & set(vars(Settings).get("__annotations__", {})), "each field is declared once"


def test_a_step_finds_its_workspace_from_the_platforms_variables_whatever_the_service_settings_say(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In an Azure ML job the platform sets AZUREML_ARM_*; a service setting a step never reads cannot stop it."""
    for variable in ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZUREML_WORKSPACE_NAME", "WORKSPACE_BACKEND"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AZUREML_ARM_SUBSCRIPTION", "00000000-0000-0000-0000-000000000000")
    monkeypatch.setenv("AZUREML_ARM_RESOURCEGROUP", "rg")
    monkeypatch.setenv("AZUREML_ARM_WORKSPACE_NAME", "ws")
    monkeypatch.setenv("DEFAULT_IDENTITY_CLIENT_ID", "33333333-3333-3333-3333-333333333333")
    monkeypatch.setenv("STORAGE_ACCOUNT_CONTAINER_NAME", "Bad_Name")
    monkeypatch.setenv("RETRAIN_MIN_NEW_IMAGES", "none")
    with pytest.raises(SettingsError, match=r"STORAGE_ACCOUNT_CONTAINER_NAME.*RETRAIN_MIN_NEW_IMAGES"):
        load_settings()
    location = load_registry_location()
    assert type(location) is RegistryLocation and location.backend() == "azureml"
    assert location.azureml_workspace() == ("00000000-0000-0000-0000-000000000000", "rg", "ws")
    assert location.DEFAULT_IDENTITY_CLIENT_ID == "33333333-3333-3333-3333-333333333333"
    assert not hasattr(location, "STORAGE_ACCOUNT_CONTAINER_NAME")


def test_the_registry_location_names_the_variable_it_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKSPACE_BACKEND", "cloud")
    with pytest.raises(SettingsError, match=r"^invalid configuration: WORKSPACE_BACKEND Input should be"):
        load_registry_location()
    monkeypatch.setenv("WORKSPACE_BACKEND", "azureml")
    for variable in ("AZURE_SUBSCRIPTION_ID", "AZUREML_ARM_SUBSCRIPTION", "AZURE_RESOURCE_GROUP"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AZUREML_ARM_RESOURCEGROUP", "rg")
    monkeypatch.setenv("AZUREML_WORKSPACE_NAME", "ws")
    with pytest.raises(SettingsError, match=r"AZURE_SUBSCRIPTION_ID not set \(needed for the azureml backend\)"):
        load_registry_location().backend()


def test_a_step_cli_says_which_variable_keeps_it_from_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline_steps import register_model

    monkeypatch.setenv("WORKSPACE_BACKEND", "cloud")
    code = register_model.main(
        ["--model_input_path", str(tmp_path), "--model_metadata_path", str(tmp_path / "out"), "--model_base_name", "m"]
    )
    assert code == 1
    assert "register model failed: invalid configuration: WORKSPACE_BACKEND" in capsys.readouterr().err
