"""Ask the Hugging Face Hub about a repo in seconds, for the checks made at submit."""

from __future__ import annotations

import re
from typing import Literal

#: A Hub repo id: ``name`` or ``owner/name`` (anything else given as a model or dataset is a path).
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")

#: The Hub client otherwise retries an unreachable Hub for about half a minute.
HUB_TIMEOUT_SECONDS = 5


class HubUnreachable(Exception):
    """The Hub gave no answer; the message is the error's type (ConnectError, ReadTimeout...)."""


def hub_problem(repo_id: str, *, repo_type: Literal["model", "dataset"]) -> str | None:
    """Why the Hub cannot serve ``repo_id`` ("not found on the Hugging Face Hub"...), or None when it can.

    Raises:
        HubUnreachable: the Hub could not be asked within ``HUB_TIMEOUT_SECONDS``.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().repo_info(repo_id, repo_type=repo_type, timeout=HUB_TIMEOUT_SECONDS)
    except GatedRepoError:  # before its base class, RepositoryNotFoundError
        return "gated on the Hugging Face Hub: accept its terms and set HF_TOKEN"
    except RepositoryNotFoundError:
        return "not found on the Hugging Face Hub"
    except Exception as exc:  # connection errors come in many types
        raise HubUnreachable(type(exc).__name__) from None
    return None
