"""DICOM instance upload (multipart, one or many files)."""

from __future__ import annotations

import logging
from functools import partial
from typing import Annotated

from fastapi import APIRouter, File, Request, UploadFile
from fastapi.responses import JSONResponse

import dicom_io
from app.api.deps import DbDep, Integrator, SettingsDep, StoreDep
from app.api.errors import ErrorBody, error_response, status_for
from app.api.schemas import InstanceResult, RejectedFile, UploadResponse
from app.services.errors import ConflictError, PayloadTooLargeError
from app.services.ingest import decode_limits, ingest_instance

router = APIRouter(prefix="/instances", tags=["instances"])
logger = logging.getLogger(__name__)


@router.post(
    "",
    response_model=UploadResponse,
    status_code=201,
    summary="Upload DICOM instances (Part 10 files) as multipart form data",
    description=(
        "Each file is validated, stored durably (content-addressed) and recorded before the response. "
        "Re-sending an instance is harmless: one copy is kept. 201: all stored; 200: nothing new; "
        "202: some files rejected (listed); 4xx: every file rejected."
    ),
    responses={
        200: {"model": UploadResponse},
        202: {"model": UploadResponse},
        413: {"model": ErrorBody},
        422: {"model": ErrorBody},
    },
)
def upload_instances(
    request: Request,
    files: Annotated[list[UploadFile], File(description="One or more DICOM Part 10 files")],
    principal: Integrator,
    db: DbDep,
    store: StoreDep,
    settings: SettingsDep,
) -> JSONResponse:
    limits = settings.storage
    if len(files) > limits.max_upload_files:
        raise PayloadTooLargeError(
            f"{len(files)} files in one request; the limit is {limits.max_upload_files}: "
            "split the upload (RADCHECK_STORAGE__MAX_UPLOAD_FILES)."
        )
    limits_of_decode = decode_limits(settings)
    accepted: list[InstanceResult] = []
    rejected: list[RejectedFile] = []
    statuses: list[int] = []
    for upload in files:
        data = upload.file.read(limits.max_upload_bytes + 1)
        try:
            if len(data) > limits.max_upload_bytes:
                raise PayloadTooLargeError(
                    f"File is larger than {limits.max_upload_bytes} bytes "
                    "(RADCHECK_STORAGE__MAX_UPLOAD_BYTES)."
                )
            if not data:
                raise dicom_io.DicomIOError(
                    "The file is empty: send a DICOM Part 10 file (128-byte preamble + 'DICM')."
                )
            outcome = db.run(
                partial(
                    ingest_instance,
                    store=store,
                    data=data,
                    actor=principal.actor,
                    limits=limits_of_decode,
                )
            )
            if outcome.conflict:
                raise ConflictError(
                    f"SOP Instance UID {outcome.sop_instance_uid} is already stored with different "
                    "content; the stored object was kept. A corrected object needs a new "
                    "SOPInstanceUID."
                )
        except (dicom_io.DicomIOError, PayloadTooLargeError, ConflictError) as exc:
            status, type_ = status_for(exc)
            statuses.append(status)
            rejected.append(RejectedFile(filename=upload.filename, type=type_, detail=str(exc)))
            continue
        accepted.append(
            InstanceResult(
                sop_instance_uid=outcome.sop_instance_uid,
                study_instance_uid=outcome.study_instance_uid,
                series_instance_uid=outcome.series_instance_uid,
                kind=outcome.kind,
                stored=outcome.stored,
                eligible_for_model=outcome.eligible,
                reasons=list(outcome.reasons),
            )
        )
    body = UploadResponse(accepted=accepted, rejected=rejected)
    if not accepted:
        first = rejected[0]
        detail = first.detail if len(rejected) == 1 else f"All {len(rejected)} files were rejected."
        return error_response(
            request,
            max(set(statuses), key=statuses.count),
            first.type,
            detail,
            errors=[r.model_dump() for r in rejected],
        )
    if rejected:
        status = 202
    elif any(a.stored for a in accepted):
        status = 201
    else:
        status = 200
    return JSONResponse(body.model_dump(mode="json"), status_code=status)
