"""/v1/fine_tuning/alpha/graders: validate a grader, and run one on a model sample, as OpenAI's answer
(so ``client.fine_tuning.alpha.graders.run(...)`` / ``.validate(...)`` of the ``openai`` SDK work)."""

from __future__ import annotations

import time

from fastapi import APIRouter

from ...sft.graders import Grader, MultiGrader, ScoreModelGrader, grade_samples, make_sample
from ..auth import Principal
from ...core.errors import InvalidConfig
from ...jobs.grader_policy import check_graders
from ...jobs.manager import SFTJobManager
from ..deps import CurrentUser, GradingDep, ManagerDep
from .errors import OpenAIRoute, invalid, responses
from .schemas import GraderRunRequest, GraderRunResponse, GraderValidateRequest, GraderValidateResponse

router = APIRouter(prefix="/v1/fine_tuning/alpha/graders", tags=["openai"], route_class=OpenAIRoute,
                   responses=responses(400))


@router.post("/validate", response_model=GraderValidateResponse)
def validate_grader(request: GraderValidateRequest, user: CurrentUser, manager: ManagerDep) -> dict:
    """The grader, if this service can run it for this user (else 400 naming the field)."""
    _check_graders(request.grader, manager, user)
    return {"grader": request.grader.model_dump(exclude_none=True)}


@router.post("/run", response_model=GraderRunResponse)
def run_grader(request: GraderRunRequest, user: CurrentUser, manager: ManagerDep, grading: GradingDep) -> dict:
    """Grade ``model_sample`` against ``item``; a grader that cannot score says why in metadata.errors."""
    grader = request.grader
    _check_graders(grader, manager, user)
    item = request.item if request.item is not None else {}
    started = time.perf_counter()
    result = grade_samples(grader, [make_sample(request.model_sample)], [item], grading)[0]
    judges = [grader] if isinstance(grader, ScoreModelGrader) else [
        sub for sub in (grader.named_graders().values() if isinstance(grader, MultiGrader) else [])
        if isinstance(sub, ScoreModelGrader)]
    models = {judge.model for judge in judges}
    usage = {models.pop(): result.token_usage} if len(models) == 1 and result.token_usage is not None else {}
    return {
        "reward": result.score,
        "sub_rewards": result.sub_rewards,
        "model_grader_token_usage_per_model": usage,
        "metadata": {"name": grader.name, "type": grader.type, "errors": result.errors,
                     "execution_time": round(time.perf_counter() - started, 4),
                     "scores": result.sub_rewards or {grader.name: result.score}, "token_usage": result.token_usage},
    }


def _check_graders(grader: Grader, manager: SFTJobManager, user: Principal) -> None:
    """A 400 naming the judge's base_url (``param``) that this user may not have the server call."""
    try:
        check_graders({"grader": grader}, manager.settings, user)
    except InvalidConfig as exc:
        raise invalid(exc.detail, param=exc.errors[0]["field"]) from None
