"""The release the service submits: one version per deployed commit, for the components and their environments."""

from pathlib import Path

#: The package version; a release adds the commit it was built from.
PACKAGE_VERSION = "0.1.0"
#: Written by `infra/deploy.sh` before it publishes the app and registers the components, so both name
#: the same release (`<package version>-<commit>`); absent in a checkout, where the release is `<version>-dev`.
RELEASE_FILE = Path(__file__).resolve().parent / "RELEASE"


def pipeline_release() -> str:
    """The version under which `retrain register-components` registers the step components and their
    environment, and which the service's submissions reference: one per deployed commit, never re-used."""
    if RELEASE_FILE.is_file():
        return RELEASE_FILE.read_text(encoding="utf-8").strip()
    return f"{PACKAGE_VERSION}-dev"
