import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Preference(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PREFERENCE_UNSPECIFIED: _ClassVar[Preference]
    PREFERENCE_A: _ClassVar[Preference]
    PREFERENCE_B: _ClassVar[Preference]
    PREFERENCE_TIE: _ClassVar[Preference]
    PREFERENCE_BOTH_BAD: _ClassVar[Preference]
PREFERENCE_UNSPECIFIED: Preference
PREFERENCE_A: Preference
PREFERENCE_B: Preference
PREFERENCE_TIE: Preference
PREFERENCE_BOTH_BAD: Preference

class GetStatusRequest(_message.Message):
    __slots__ = ("project",)
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    project: str
    def __init__(self, project: _Optional[str] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("checkpoint_id", "strategy", "pool_size", "featurized", "labeled", "leased", "feature_dim", "lam", "version", "prompts", "responses", "annotations", "loading_checkpoint_id", "lora", "fresh_adapter", "ties", "both_bad")
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    POOL_SIZE_FIELD_NUMBER: _ClassVar[int]
    FEATURIZED_FIELD_NUMBER: _ClassVar[int]
    LABELED_FIELD_NUMBER: _ClassVar[int]
    LEASED_FIELD_NUMBER: _ClassVar[int]
    FEATURE_DIM_FIELD_NUMBER: _ClassVar[int]
    LAM_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    ANNOTATIONS_FIELD_NUMBER: _ClassVar[int]
    LOADING_CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    LORA_FIELD_NUMBER: _ClassVar[int]
    FRESH_ADAPTER_FIELD_NUMBER: _ClassVar[int]
    TIES_FIELD_NUMBER: _ClassVar[int]
    BOTH_BAD_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    strategy: str
    pool_size: int
    featurized: int
    labeled: int
    leased: int
    feature_dim: int
    lam: float
    version: str
    prompts: int
    responses: int
    annotations: int
    loading_checkpoint_id: str
    lora: LoraSpec
    fresh_adapter: bool
    ties: int
    both_bad: int
    def __init__(self, checkpoint_id: _Optional[str] = ..., strategy: _Optional[str] = ..., pool_size: _Optional[int] = ..., featurized: _Optional[int] = ..., labeled: _Optional[int] = ..., leased: _Optional[int] = ..., feature_dim: _Optional[int] = ..., lam: _Optional[float] = ..., version: _Optional[str] = ..., prompts: _Optional[int] = ..., responses: _Optional[int] = ..., annotations: _Optional[int] = ..., loading_checkpoint_id: _Optional[str] = ..., lora: _Optional[_Union[LoraSpec, _Mapping]] = ..., fresh_adapter: _Optional[bool] = ..., ties: _Optional[int] = ..., both_bad: _Optional[int] = ...) -> None: ...

class LoraSpec(_message.Message):
    __slots__ = ("r", "alpha", "target_modules")
    R_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    r: int
    alpha: int
    target_modules: str
    def __init__(self, r: _Optional[int] = ..., alpha: _Optional[int] = ..., target_modules: _Optional[str] = ...) -> None: ...

class LoadCheckpointRequest(_message.Message):
    __slots__ = ("checkpoint_id", "manifest", "base", "adapter", "id", "lora")
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    LORA_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    manifest: str
    base: str
    adapter: str
    id: str
    lora: LoraSpec
    def __init__(self, checkpoint_id: _Optional[str] = ..., manifest: _Optional[str] = ..., base: _Optional[str] = ..., adapter: _Optional[str] = ..., id: _Optional[str] = ..., lora: _Optional[_Union[LoraSpec, _Mapping]] = ...) -> None: ...

class LoadCheckpointResponse(_message.Message):
    __slots__ = ("checkpoint_id", "loaded", "previous_checkpoint_id", "refeaturized", "seconds")
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    REFEATURIZED_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    loaded: bool
    previous_checkpoint_id: str
    refeaturized: int
    seconds: float
    def __init__(self, checkpoint_id: _Optional[str] = ..., loaded: _Optional[bool] = ..., previous_checkpoint_id: _Optional[str] = ..., refeaturized: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class CandidateResponse(_message.Message):
    __slots__ = ("id", "text")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class PromptGroup(_message.Message):
    __slots__ = ("id", "prompt", "responses", "messages")
    ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    id: str
    prompt: str
    responses: _containers.RepeatedCompositeFieldContainer[CandidateResponse]
    messages: str
    def __init__(self, id: _Optional[str] = ..., prompt: _Optional[str] = ..., responses: _Optional[_Iterable[_Union[CandidateResponse, _Mapping]]] = ..., messages: _Optional[str] = ...) -> None: ...

class CandidatePair(_message.Message):
    __slots__ = ("id", "prompt_id", "prompt", "a", "b", "messages")
    ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    A_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    id: str
    prompt_id: str
    prompt: str
    a: CandidateResponse
    b: CandidateResponse
    messages: str
    def __init__(self, id: _Optional[str] = ..., prompt_id: _Optional[str] = ..., prompt: _Optional[str] = ..., a: _Optional[_Union[CandidateResponse, _Mapping]] = ..., b: _Optional[_Union[CandidateResponse, _Mapping]] = ..., messages: _Optional[str] = ...) -> None: ...

class AddCandidatesRequest(_message.Message):
    __slots__ = ("group", "pair", "pool", "project", "return_pairs")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    PAIR_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    RETURN_PAIRS_FIELD_NUMBER: _ClassVar[int]
    group: PromptGroup
    pair: CandidatePair
    pool: str
    project: str
    return_pairs: bool
    def __init__(self, group: _Optional[_Union[PromptGroup, _Mapping]] = ..., pair: _Optional[_Union[CandidatePair, _Mapping]] = ..., pool: _Optional[str] = ..., project: _Optional[str] = ..., return_pairs: _Optional[bool] = ...) -> None: ...

class AddedPair(_message.Message):
    __slots__ = ("pair_id", "added", "swapped")
    PAIR_ID_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    SWAPPED_FIELD_NUMBER: _ClassVar[int]
    pair_id: str
    added: bool
    swapped: bool
    def __init__(self, pair_id: _Optional[str] = ..., added: _Optional[bool] = ..., swapped: _Optional[bool] = ...) -> None: ...

class AddCandidatesResponse(_message.Message):
    __slots__ = ("prompts_added", "responses_added", "pairs_added", "pairs_deduplicated", "pairs")
    PROMPTS_ADDED_FIELD_NUMBER: _ClassVar[int]
    RESPONSES_ADDED_FIELD_NUMBER: _ClassVar[int]
    PAIRS_ADDED_FIELD_NUMBER: _ClassVar[int]
    PAIRS_DEDUPLICATED_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    prompts_added: int
    responses_added: int
    pairs_added: int
    pairs_deduplicated: int
    pairs: _containers.RepeatedCompositeFieldContainer[AddedPair]
    def __init__(self, prompts_added: _Optional[int] = ..., responses_added: _Optional[int] = ..., pairs_added: _Optional[int] = ..., pairs_deduplicated: _Optional[int] = ..., pairs: _Optional[_Iterable[_Union[AddedPair, _Mapping]]] = ...) -> None: ...

class SelectBatchRequest(_message.Message):
    __slots__ = ("budget", "strategy", "pool", "lease_seconds", "seed", "client", "request_id", "project", "audit")
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    AUDIT_FIELD_NUMBER: _ClassVar[int]
    budget: int
    strategy: str
    pool: str
    lease_seconds: int
    seed: int
    client: str
    request_id: str
    project: str
    audit: int
    def __init__(self, budget: _Optional[int] = ..., strategy: _Optional[str] = ..., pool: _Optional[str] = ..., lease_seconds: _Optional[int] = ..., seed: _Optional[int] = ..., client: _Optional[str] = ..., request_id: _Optional[str] = ..., project: _Optional[str] = ..., audit: _Optional[int] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("stage", "done", "total")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    stage: str
    done: int
    total: int
    def __init__(self, stage: _Optional[str] = ..., done: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class SelectedPair(_message.Message):
    __slots__ = ("pair_id", "prompt", "response_a", "response_b", "score", "rank", "prompt_id", "response_a_id", "response_b_id", "prompt_messages", "audit", "margin")
    PAIR_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_A_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_B_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    PROMPT_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_A_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_B_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    AUDIT_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    pair_id: str
    prompt: str
    response_a: str
    response_b: str
    score: float
    rank: int
    prompt_id: str
    response_a_id: str
    response_b_id: str
    prompt_messages: str
    audit: bool
    margin: float
    def __init__(self, pair_id: _Optional[str] = ..., prompt: _Optional[str] = ..., response_a: _Optional[str] = ..., response_b: _Optional[str] = ..., score: _Optional[float] = ..., rank: _Optional[int] = ..., prompt_id: _Optional[str] = ..., response_a_id: _Optional[str] = ..., response_b_id: _Optional[str] = ..., prompt_messages: _Optional[str] = ..., audit: _Optional[bool] = ..., margin: _Optional[float] = ...) -> None: ...

class SelectedBatch(_message.Message):
    __slots__ = ("pairs", "checkpoint_id", "strategy", "lease_id", "lease_expires", "candidates")
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    pairs: _containers.RepeatedCompositeFieldContainer[SelectedPair]
    checkpoint_id: str
    strategy: str
    lease_id: str
    lease_expires: _timestamp_pb2.Timestamp
    candidates: int
    def __init__(self, pairs: _Optional[_Iterable[_Union[SelectedPair, _Mapping]]] = ..., checkpoint_id: _Optional[str] = ..., strategy: _Optional[str] = ..., lease_id: _Optional[str] = ..., lease_expires: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., candidates: _Optional[int] = ...) -> None: ...

class SelectBatchResponse(_message.Message):
    __slots__ = ("progress", "batch")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    batch: SelectedBatch
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., batch: _Optional[_Union[SelectedBatch, _Mapping]] = ...) -> None: ...

class Label(_message.Message):
    __slots__ = ("pair_id", "preference", "annotator", "idempotency_key", "revision", "withdrawn")
    PAIR_ID_FIELD_NUMBER: _ClassVar[int]
    PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    ANNOTATOR_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    WITHDRAWN_FIELD_NUMBER: _ClassVar[int]
    pair_id: str
    preference: Preference
    annotator: str
    idempotency_key: str
    revision: int
    withdrawn: bool
    def __init__(self, pair_id: _Optional[str] = ..., preference: _Optional[_Union[Preference, str]] = ..., annotator: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., revision: _Optional[int] = ..., withdrawn: _Optional[bool] = ...) -> None: ...

class SubmitLabelsRequest(_message.Message):
    __slots__ = ("labels", "project")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    project: str
    def __init__(self, labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., project: _Optional[str] = ...) -> None: ...

class LabelResult(_message.Message):
    __slots__ = ("pair_id", "accepted", "reason", "label_id", "late", "replayed", "revised")
    PAIR_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LABEL_ID_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    REVISED_FIELD_NUMBER: _ClassVar[int]
    pair_id: str
    accepted: bool
    reason: str
    label_id: int
    late: bool
    replayed: bool
    revised: bool
    def __init__(self, pair_id: _Optional[str] = ..., accepted: _Optional[bool] = ..., reason: _Optional[str] = ..., label_id: _Optional[int] = ..., late: _Optional[bool] = ..., replayed: _Optional[bool] = ..., revised: _Optional[bool] = ...) -> None: ...

class SubmitLabelsResponse(_message.Message):
    __slots__ = ("results", "accepted", "rejected")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[LabelResult]
    accepted: int
    rejected: int
    def __init__(self, results: _Optional[_Iterable[_Union[LabelResult, _Mapping]]] = ..., accepted: _Optional[int] = ..., rejected: _Optional[int] = ...) -> None: ...

class ExportLabelsRequest(_message.Message):
    __slots__ = ("include_ties", "after_label_id", "project")
    INCLUDE_TIES_FIELD_NUMBER: _ClassVar[int]
    AFTER_LABEL_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    include_ties: bool
    after_label_id: int
    project: str
    def __init__(self, include_ties: _Optional[bool] = ..., after_label_id: _Optional[int] = ..., project: _Optional[str] = ...) -> None: ...

class LabeledPair(_message.Message):
    __slots__ = ("label_id", "pair_id", "prompt", "chosen", "rejected", "preference", "annotator", "labeled_at", "checkpoint_id", "late", "idempotency_key", "revision", "audit", "margin")
    LABEL_ID_FIELD_NUMBER: _ClassVar[int]
    PAIR_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    ANNOTATOR_FIELD_NUMBER: _ClassVar[int]
    LABELED_AT_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    AUDIT_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    label_id: int
    pair_id: str
    prompt: str
    chosen: str
    rejected: str
    preference: Preference
    annotator: str
    labeled_at: _timestamp_pb2.Timestamp
    checkpoint_id: str
    late: bool
    idempotency_key: str
    revision: int
    audit: bool
    margin: float
    def __init__(self, label_id: _Optional[int] = ..., pair_id: _Optional[str] = ..., prompt: _Optional[str] = ..., chosen: _Optional[str] = ..., rejected: _Optional[str] = ..., preference: _Optional[_Union[Preference, str]] = ..., annotator: _Optional[str] = ..., labeled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., checkpoint_id: _Optional[str] = ..., late: _Optional[bool] = ..., idempotency_key: _Optional[str] = ..., revision: _Optional[int] = ..., audit: _Optional[bool] = ..., margin: _Optional[float] = ...) -> None: ...

class ReleaseLeaseRequest(_message.Message):
    __slots__ = ("lease_id", "pair_ids", "project")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    PAIR_IDS_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    pair_ids: _containers.RepeatedScalarFieldContainer[str]
    project: str
    def __init__(self, lease_id: _Optional[str] = ..., pair_ids: _Optional[_Iterable[str]] = ..., project: _Optional[str] = ...) -> None: ...

class ReleaseLeaseResponse(_message.Message):
    __slots__ = ("released",)
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    released: int
    def __init__(self, released: _Optional[int] = ...) -> None: ...

class CheckpointFile(_message.Message):
    __slots__ = ("path", "size", "sha256")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    path: str
    size: int
    sha256: str
    def __init__(self, path: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class UploadHeader(_message.Message):
    __slots__ = ("checkpoint_id", "base", "files", "parent_id", "base_model")
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    base: str
    files: _containers.RepeatedCompositeFieldContainer[CheckpointFile]
    parent_id: str
    base_model: bool
    def __init__(self, checkpoint_id: _Optional[str] = ..., base: _Optional[str] = ..., files: _Optional[_Iterable[_Union[CheckpointFile, _Mapping]]] = ..., parent_id: _Optional[str] = ..., base_model: _Optional[bool] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("sha256", "offset", "data")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    offset: int
    data: bytes
    def __init__(self, sha256: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class UploadCheckpointRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UploadHeader
    chunk: FileChunk
    def __init__(self, header: _Optional[_Union[UploadHeader, _Mapping]] = ..., chunk: _Optional[_Union[FileChunk, _Mapping]] = ...) -> None: ...

class UploadCheckpointResponse(_message.Message):
    __slots__ = ("checkpoint_id", "complete", "missing", "bytes_received", "partial")
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    complete: bool
    missing: _containers.RepeatedScalarFieldContainer[str]
    bytes_received: int
    partial: _containers.RepeatedCompositeFieldContainer[PartialFile]
    def __init__(self, checkpoint_id: _Optional[str] = ..., complete: _Optional[bool] = ..., missing: _Optional[_Iterable[str]] = ..., bytes_received: _Optional[int] = ..., partial: _Optional[_Iterable[_Union[PartialFile, _Mapping]]] = ...) -> None: ...

class PartialFile(_message.Message):
    __slots__ = ("sha256", "offset")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    offset: int
    def __init__(self, sha256: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class DescribePoolRequest(_message.Message):
    __slots__ = ("pool", "project", "max_pairs", "seed")
    POOL_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    MAX_PAIRS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    pool: str
    project: str
    max_pairs: int
    seed: int
    def __init__(self, pool: _Optional[str] = ..., project: _Optional[str] = ..., max_pairs: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class DescribePoolResponse(_message.Message):
    __slots__ = ("pairs", "pair_ids", "margins", "scores", "checkpoint_id")
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    PAIR_IDS_FIELD_NUMBER: _ClassVar[int]
    MARGINS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    pairs: int
    pair_ids: _containers.RepeatedScalarFieldContainer[str]
    margins: _containers.RepeatedScalarFieldContainer[float]
    scores: _containers.RepeatedScalarFieldContainer[float]
    checkpoint_id: str
    def __init__(self, pairs: _Optional[int] = ..., pair_ids: _Optional[_Iterable[str]] = ..., margins: _Optional[_Iterable[float]] = ..., scores: _Optional[_Iterable[float]] = ..., checkpoint_id: _Optional[str] = ...) -> None: ...
