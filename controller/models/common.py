"""Building blocks shared by the routeserver.dev/v1alpha1 models (see crds/ for the API itself).

The models mirror the CRD schemas field for field, default for default
(tests/controller/test_models.py compares them with the YAML). They also re-implement the CEL rules
of the CRDs, because the standalone mode reads the same YAML without an API server to enforce them;
transition rules (immutability) have no counterpart here since a file has no previous version.
Field names are the Python spelling of the API's camelCase names; `model_validate` takes the API
spelling and `to_manifest` writes it back.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

GROUP = "routeserver.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

MAX_UINT32 = 4294967295
AS_TRANS = 23456  # RFC 6793 §9: stands in for a 4-octet ASN in 2-octet fields; never a speaker's ASN

# metav1.Condition's own validation, as the Kubernetes API generates it.
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"  # optional DNS prefix
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
# Reasons of our own (session transitions, route rejections): the CamelCase values of our enums.
REASON_PATTERN = r"^[A-Z][A-Za-z0-9]*$"

IPAddressValue = IPv4Address | IPv6Address
NetworkValue = IPv4Network | IPv6Network


def _drop_nulls(data: object) -> object:
    """The API server prunes null values of non-nullable fields before defaulting; so do we."""
    if isinstance(data, dict):
        return {key: value for key, value in data.items() if value is not None}
    return data


class SpecModel(BaseModel):
    """Spec parts: unknown fields are errors (a typo in a standalone YAML file must not pass)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, alias_generator=to_camel)

    @model_validator(mode="before")
    @classmethod
    def _prune_nulls(cls, data: object) -> object:
        return _drop_nulls(data)


class StatusModel(BaseModel):
    """Status parts: unknown fields are ignored, so an older agent can read a newer one's status."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True, alias_generator=to_camel)

    @model_validator(mode="before")
    @classmethod
    def _prune_nulls(cls, data: object) -> object:
        return _drop_nulls(data)


def to_manifest(model: BaseModel) -> dict[str, Any]:
    """The API (camelCase, JSON) form of a model, without absent fields."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


# -- addresses and prefixes ---------------------------------------------------------------------


def parse_ip(value: object) -> object:
    """An IPv4/IPv6 address as the Kubernetes CEL `isIP` accepts it: no zone, no IPv4-mapped IPv6."""
    if not isinstance(value, str):
        return value
    if "%" in value:
        raise ValueError(f"{value!r} must not carry an IPv6 zone")
    address = ip_address(value)
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        raise ValueError(f"{value!r} is an IPv4-mapped IPv6 address; write the IPv4 address")
    return address


def parse_network(value: object) -> object:
    """A network in CIDR notation with no host bits set (CEL `cidr(x) == cidr(x).masked()`)."""
    if not isinstance(value, str):
        return value
    message = (
        "prefix must be a network in CIDR notation with no host bits set, like 203.0.113.0/24"
        f" (got {value!r})"
    )
    if "/" not in value or "%" in value:
        raise ValueError(message)
    try:
        return ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(message) from exc


def _check_asn(value: int) -> int:
    if value == AS_TRANS:
        raise ValueError("23456 is AS_TRANS (RFC 6793) and cannot be a speaker's ASN")
    return value


IPAddress = Annotated[IPAddressValue, BeforeValidator(parse_ip)]
Network = Annotated[NetworkValue, BeforeValidator(parse_network)]
Asn = Annotated[int, Field(ge=1, le=MAX_UINT32), AfterValidator(_check_asn)]
LabelValue = Annotated[str, StringConstraints(max_length=63)]


class PrefixMatch(SpecModel):
    """A prefix-list entry: without ge/le the prefix itself; otherwise longer prefixes inside it
    whose length is in [ge or the prefix length, le or 32/128]."""

    prefix: Network
    ge: int | None = Field(default=None, ge=0, le=128)
    le: int | None = Field(default=None, ge=0, le=128)

    @field_validator("ge", "le")
    @classmethod
    def _within_prefix(cls, value: int | None, info: ValidationInfo) -> int | None:
        name = info.field_name
        prefix = info.data.get("prefix")
        if value is None or prefix is None:
            return value
        if value < prefix.prefixlen:
            raise ValueError(f"{name} must be at least the prefix length")
        if prefix.version == 4 and value > 32:
            raise ValueError(f"{name} must be at most 32 for an IPv4 prefix")
        ge = info.data.get("ge")
        if name == "le" and ge is not None and value < ge:
            raise ValueError("le must be greater than or equal to ge")
        return value

    @property
    def min_length(self) -> int:
        if self.ge is not None:
            return self.ge
        return self.prefix.prefixlen

    @property
    def max_length(self) -> int:
        if self.le is not None:
            return self.le
        if self.ge is not None:
            return self.prefix.max_prefixlen
        return self.prefix.prefixlen


# -- references ---------------------------------------------------------------------------------


class ObjectRef(SpecModel):
    """A cluster-scoped object of this API group, by name."""

    name: str = Field(min_length=1, max_length=253)


class SecretKeyRef(SpecModel):
    """One key of a Secret; namespace omitted means the namespace the route server runs in."""

    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = Field(default=None, max_length=63)
    key: str = Field(default="password", min_length=1, max_length=253)


class SecretRef(SpecModel):
    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = Field(default=None, max_length=63)


# -- label selectors ----------------------------------------------------------------------------


class SelectorOperator(enum.StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(SpecModel):
    key: str = Field(max_length=317)
    operator: SelectorOperator
    values: tuple[LabelValue, ...] | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _values_match_operator(self) -> LabelSelectorRequirement:
        wants_values = self.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN)
        if wants_values != bool(self.values):
            raise ValueError(
                "nodeSelector.matchExpressions values must be non-empty for In and NotIn "
                "and empty for Exists and DoesNotExist"
            )
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator is SelectorOperator.EXISTS:
            return present
        if self.operator is SelectorOperator.DOES_NOT_EXIST:
            return not present
        inside = present and labels[self.key] in (self.values or ())
        return inside if self.operator is SelectorOperator.IN else not inside


class LabelSelector(SpecModel):
    """metav1.LabelSelector; an empty selector matches everything (Kubernetes semantics)."""

    match_labels: dict[str, LabelValue] | None = Field(default=None, max_length=64)
    match_expressions: tuple[LabelSelectorRequirement, ...] | None = Field(default=None, max_length=32)

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, value in (self.match_labels or {}).items():
            if labels.get(key) != value:
                return False
        return all(req.matches(labels) for req in self.match_expressions or ())


def selects(selector: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    """An omitted selector selects every node, like an empty one."""
    return selector is None or selector.matches(labels)


# -- metadata and conditions --------------------------------------------------------------------


class ObjectMeta(BaseModel):
    """The parts of metav1.ObjectMeta we read; everything else is kept as extra fields."""

    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True, alias_generator=to_camel)

    name: str = Field(min_length=1, max_length=253)
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class Condition(StatusModel):
    """metav1.Condition."""

    type: str = Field(max_length=316, pattern=CONDITION_TYPE_PATTERN)
    status: Literal["True", "False", "Unknown"]
    observed_generation: int | None = Field(default=None, ge=0)
    last_transition_time: datetime
    reason: str = Field(min_length=1, max_length=1024, pattern=CONDITION_REASON_PATTERN)
    message: str = Field(max_length=32768)
