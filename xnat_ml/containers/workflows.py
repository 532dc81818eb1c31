"""XNAT workflow entries (`wrk:workflowData`) for jobs, as XNAT's Container Service makes them.

A launch opens one workflow on its root object (pipeline name = the wrapper, status `Queued`);
the job's status changes are copied onto it (`Running`, `Finalizing`, `Complete`, `Failed`,
...), as the Container Service does, so XNAT's history table and REST clients see the job on
the object it ran on. The job itself reports its step and percentage on it through XNAT's own
`PUT /data/workflows/{id}` (xnat_ml/xnat/workflow.py). The id reaches the job as
`XNAT_WORKFLOW_ID` and its container record as `workflow-id`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from xnat_ml.store import Base, utcnow

QUEUED = "Queued"  # XNAT's PersistentWorkflowUtils.QUEUED: launched, not yet started
PIPELINE_TYPE = "PROCESS"  # EventUtils.TYPE.PROCESS
CATEGORY = "DATA"
JUSTIFICATION = "Container launch"
#: fields a caller may change with PUT /data/workflows/{id} (query names, lower case, with or
#: without the `wrk:workflowData/` prefix) -> attribute
EDITABLE = {
    "status": "status",
    "step_description": "step_description",
    "percentagecomplete": "percentage_complete",
    "current_step_id": "current_step_id",
    "details": "details",
    "comments": "comments",
}
MAX_FIELD = 1024


class Workflow(Base):
    __tablename__ = "wrk_workflowdata"
    # AUTOINCREMENT: a workflow id is never handed out twice, as the job ids
    __table_args__ = (
        Index("ix_wrk_workflowdata_object", "object_id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)  # wrk_workflowData_id
    object_id: Mapped[str] = mapped_column(String(64))  # ID: the object it ran on
    scan_id: Mapped[str] = mapped_column(String(64), default="")
    project: Mapped[str] = mapped_column(String(64), index=True)  # ExternalID
    data_type: Mapped[str] = mapped_column(String(64))
    pipeline_name: Mapped[str] = mapped_column(String(255))
    launch_time: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(64), default=QUEUED)
    step_description: Mapped[str] = mapped_column(Text, default="")
    percentage_complete: Mapped[str] = mapped_column(String(16), default="")
    current_step_id: Mapped[str] = mapped_column(String(64), default="")
    current_step_launch_time: Mapped[datetime] = mapped_column(default=utcnow)
    details: Mapped[str] = mapped_column(Text, default="")
    comments: Mapped[str] = mapped_column(Text, default="")
    job_id: Mapped[str] = mapped_column(String(64), default="")  # jobID: the bulk launch id
    create_user: Mapped[str] = mapped_column(String(255))

    def mirror(self, status: str, details: str = "") -> None:
        """The job's status onto the workflow (XNAT's ContainerUtils.updateWorkflowStatus)."""
        self.status = status
        self.details = details
        self.current_step_launch_time = utcnow()

    def fields(self) -> dict:
        """The workflow under XNAT's `wrk:workflowData` field names (its XML/JSON item)."""
        return {
            "wrk_workflowData_id": self.id,
            "ID": self.object_id,
            "scan_id": self.scan_id,
            "ExternalID": self.project,
            "data_type": self.data_type,
            "pipeline_name": self.pipeline_name,
            "launch_time": _text(self.launch_time),
            "status": self.status,
            "step_description": self.step_description,
            "percentageComplete": self.percentage_complete,
            "current_step_id": self.current_step_id,
            "current_step_launch_time": _text(self.current_step_launch_time),
            "details": self.details,
            "comments": self.comments,
            "jobID": self.job_id,
            "category": CATEGORY,
            "type": PIPELINE_TYPE,
            "justification": JUSTIFICATION,
            "create_user": self.create_user,
        }

    def to_json(self) -> dict:
        """`GET /xapi/workflows/{id}`: the same fields, keyed as XNAT's xapi serializes a
        workflow (`wfid`, `pipelineName`, `percentageComplete`, ...)."""
        return {
            "wfid": self.id,
            "id": self.object_id,
            "scanId": self.scan_id,
            "externalId": self.project,
            "dataType": self.data_type,
            "pipelineName": self.pipeline_name,
            "launchTime": _text(self.launch_time),
            "status": self.status,
            "stepDescription": self.step_description,
            "percentageComplete": self.percentage_complete,
            "currentStepId": self.current_step_id,
            "currentStepLaunchTime": _text(self.current_step_launch_time),
            "details": self.details,
            "comments": self.comments,
            "jobId": self.job_id,
            "category": CATEGORY,
            "type": PIPELINE_TYPE,
            "justification": JUSTIFICATION,
            "createUser": self.create_user,
        }


def _text(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S")
