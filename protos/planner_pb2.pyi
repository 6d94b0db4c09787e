from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class History(_message.Message):
    __slots__ = ("item_ids", "category_ids", "feedback", "steps", "titles")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_IDS_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TITLES_FIELD_NUMBER: _ClassVar[int]
    item_ids: bytes
    category_ids: bytes
    feedback: bytes
    steps: bytes
    titles: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, item_ids: _Optional[bytes] = ..., category_ids: _Optional[bytes] = ..., feedback: _Optional[bytes] = ..., steps: _Optional[bytes] = ..., titles: _Optional[_Iterable[str]] = ...) -> None: ...

class UserContext(_message.Message):
    __slots__ = ("user_id", "step", "history", "candidate_categories", "num_categories", "reflections", "past")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    NUM_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    REFLECTIONS_FIELD_NUMBER: _ClassVar[int]
    PAST_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    step: int
    history: History
    candidate_categories: _containers.RepeatedScalarFieldContainer[int]
    num_categories: int
    reflections: _containers.RepeatedScalarFieldContainer[str]
    past: History
    def __init__(self, user_id: _Optional[int] = ..., step: _Optional[int] = ..., history: _Optional[_Union[History, _Mapping]] = ..., candidate_categories: _Optional[_Iterable[int]] = ..., num_categories: _Optional[int] = ..., reflections: _Optional[_Iterable[str]] = ..., past: _Optional[_Union[History, _Mapping]] = ...) -> None: ...

class PlanRequest(_message.Message):
    __slots__ = ("users", "category_names", "seed")
    USERS_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_NAMES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[UserContext]
    category_names: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    def __init__(self, users: _Optional[_Iterable[_Union[UserContext, _Mapping]]] = ..., category_names: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ...) -> None: ...

class CategorySet(_message.Message):
    __slots__ = ("category_ids",)
    CATEGORY_IDS_FIELD_NUMBER: _ClassVar[int]
    category_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, category_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class PlanResponse(_message.Message):
    __slots__ = ("plans", "backend")
    PLANS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    plans: _containers.RepeatedCompositeFieldContainer[CategorySet]
    backend: str
    def __init__(self, plans: _Optional[_Iterable[_Union[CategorySet, _Mapping]]] = ..., backend: _Optional[str] = ...) -> None: ...

class SessionSummary(_message.Message):
    __slots__ = ("user_id", "shown_categories", "feedback", "length", "session_return")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SHOWN_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    SESSION_RETURN_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    shown_categories: _containers.RepeatedScalarFieldContainer[int]
    feedback: _containers.RepeatedScalarFieldContainer[float]
    length: int
    session_return: float
    def __init__(self, user_id: _Optional[int] = ..., shown_categories: _Optional[_Iterable[int]] = ..., feedback: _Optional[_Iterable[float]] = ..., length: _Optional[int] = ..., session_return: _Optional[float] = ...) -> None: ...

class ReflectRequest(_message.Message):
    __slots__ = ("sessions", "category_names", "seed")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_NAMES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[SessionSummary]
    category_names: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    def __init__(self, sessions: _Optional[_Iterable[_Union[SessionSummary, _Mapping]]] = ..., category_names: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ...) -> None: ...

class ReflectResponse(_message.Message):
    __slots__ = ("critiques", "backend")
    CRITIQUES_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    critiques: _containers.RepeatedScalarFieldContainer[str]
    backend: str
    def __init__(self, critiques: _Optional[_Iterable[str]] = ..., backend: _Optional[str] = ...) -> None: ...

class CandidateItem(_message.Message):
    __slots__ = ("item_id", "category_id", "title")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    item_id: int
    category_id: int
    title: str
    def __init__(self, item_id: _Optional[int] = ..., category_id: _Optional[int] = ..., title: _Optional[str] = ...) -> None: ...

class ProposeQuery(_message.Message):
    __slots__ = ("user_id", "recent", "candidates", "num_items")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    RECENT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    NUM_ITEMS_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    recent: History
    candidates: _containers.RepeatedCompositeFieldContainer[CandidateItem]
    num_items: int
    def __init__(self, user_id: _Optional[int] = ..., recent: _Optional[_Union[History, _Mapping]] = ..., candidates: _Optional[_Iterable[_Union[CandidateItem, _Mapping]]] = ..., num_items: _Optional[int] = ...) -> None: ...

class ProposeRequest(_message.Message):
    __slots__ = ("queries", "category_names", "seed")
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_NAMES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    queries: _containers.RepeatedCompositeFieldContainer[ProposeQuery]
    category_names: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    def __init__(self, queries: _Optional[_Iterable[_Union[ProposeQuery, _Mapping]]] = ..., category_names: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ...) -> None: ...

class ItemList(_message.Message):
    __slots__ = ("item_ids",)
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, item_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class ProposeResponse(_message.Message):
    __slots__ = ("proposals", "backend")
    PROPOSALS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    proposals: _containers.RepeatedCompositeFieldContainer[ItemList]
    backend: str
    def __init__(self, proposals: _Optional[_Iterable[_Union[ItemList, _Mapping]]] = ..., backend: _Optional[str] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("user_id", "history", "slate", "category_names", "seed")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    SLATE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_NAMES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    history: History
    slate: _containers.RepeatedCompositeFieldContainer[CandidateItem]
    category_names: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    def __init__(self, user_id: _Optional[int] = ..., history: _Optional[_Union[History, _Mapping]] = ..., slate: _Optional[_Iterable[_Union[CandidateItem, _Mapping]]] = ..., category_names: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("explanation", "backend")
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    explanation: str
    backend: str
    def __init__(self, explanation: _Optional[str] = ..., backend: _Optional[str] = ...) -> None: ...

class JudgeCase(_message.Message):
    __slots__ = ("history", "slate", "explanation")
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    SLATE_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    history: History
    slate: _containers.RepeatedCompositeFieldContainer[CandidateItem]
    explanation: str
    def __init__(self, history: _Optional[_Union[History, _Mapping]] = ..., slate: _Optional[_Iterable[_Union[CandidateItem, _Mapping]]] = ..., explanation: _Optional[str] = ...) -> None: ...

class JudgeRequest(_message.Message):
    __slots__ = ("cases", "category_names", "seed")
    CASES_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_NAMES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    cases: _containers.RepeatedCompositeFieldContainer[JudgeCase]
    category_names: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    def __init__(self, cases: _Optional[_Iterable[_Union[JudgeCase, _Mapping]]] = ..., category_names: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ...) -> None: ...

class JudgeResponse(_message.Message):
    __slots__ = ("scores", "backend")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedScalarFieldContainer[float]
    backend: str
    def __init__(self, scores: _Optional[_Iterable[float]] = ..., backend: _Optional[str] = ...) -> None: ...

class UserPersona(_message.Message):
    __slots__ = ("user_id", "past", "traits")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAST_FIELD_NUMBER: _ClassVar[int]
    TRAITS_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    past: History
    traits: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, user_id: _Optional[int] = ..., past: _Optional[_Union[History, _Mapping]] = ..., traits: _Optional[_Iterable[str]] = ...) -> None: ...

class RespondCase(_message.Message):
    __slots__ = ("user", "session", "slate", "ask_leave")
    USER_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    SLATE_FIELD_NUMBER: _ClassVar[int]
    ASK_LEAVE_FIELD_NUMBER: _ClassVar[int]
    user: UserPersona
    session: History
    slate: _containers.RepeatedCompositeFieldContainer[CandidateItem]
    ask_leave: bool
    def __init__(self, user: _Optional[_Union[UserPersona, _Mapping]] = ..., session: _Optional[_Union[History, _Mapping]] = ..., slate: _Optional[_Iterable[_Union[CandidateItem, _Mapping]]] = ..., ask_leave: _Optional[bool] = ...) -> None: ...

class RespondRequest(_message.Message):
    __slots__ = ("cases", "category_names", "seed")
    CASES_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_NAMES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    cases: _containers.RepeatedCompositeFieldContainer[RespondCase]
    category_names: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    def __init__(self, cases: _Optional[_Iterable[_Union[RespondCase, _Mapping]]] = ..., category_names: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ...) -> None: ...

class UserResponse(_message.Message):
    __slots__ = ("ratings", "likes", "leave")
    RATINGS_FIELD_NUMBER: _ClassVar[int]
    LIKES_FIELD_NUMBER: _ClassVar[int]
    LEAVE_FIELD_NUMBER: _ClassVar[int]
    ratings: _containers.RepeatedScalarFieldContainer[float]
    likes: _containers.RepeatedScalarFieldContainer[float]
    leave: float
    def __init__(self, ratings: _Optional[_Iterable[float]] = ..., likes: _Optional[_Iterable[float]] = ..., leave: _Optional[float] = ...) -> None: ...

class RespondResponse(_message.Message):
    __slots__ = ("responses", "backend")
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[UserResponse]
    backend: str
    def __init__(self, responses: _Optional[_Iterable[_Union[UserResponse, _Mapping]]] = ..., backend: _Optional[str] = ...) -> None: ...
