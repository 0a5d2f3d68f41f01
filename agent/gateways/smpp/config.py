"""An SMPP gateway's configuration: the model rules.yaml is checked against and the driver runs."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from agent.scalars import DltChain, Duration, HexInt, NonEmpty


class SmppConfig(BaseModel):
    """One SMPP 3.4 SMSC link (``type: smpp`` under ``gateways:``).

    Binds: ``bind: transceiver`` (default) sends and receives on each bind; ``transmitter``
    only sends (no receipts, no replies: for SMSCs that deliver them elsewhere);
    ``split`` opens transmitter binds for sending plus one receiver bind for receipts and
    replies, as SMSCs that refuse transceivers want. ``binds`` is how many sending binds to
    hold open. ``window`` is per bind (unanswered submit_sm on one connection); ``tps`` is for
    the whole gateway, shared by its binds (an operator's TPS is per account)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: Literal["smpp"]
    host: NonEmpty
    port: int = Field(default=2775, ge=1, le=65535)
    system_id: Annotated[str, Field(min_length=1, max_length=15)]  # SMPP 3.4: C-string of 16
    password: SecretStr | None = None
    system_type: Annotated[str, Field(max_length=12)] = ""
    bind: Literal["transceiver", "transmitter", "split"] = "transceiver"
    binds: int = Field(default=1, ge=1, le=32)
    window: int = Field(default=10, ge=1, le=1000)
    tps: float | None = Field(default=None, gt=0)
    enquire_link: Duration = timedelta(seconds=30)
    tlvs: dict[Literal["dlt_entity_id", "dlt_template_id", "dlt_chain_id"], HexInt] = {}
    # India DLT PE-TM chain (agent.gateways.smpp.tlv.Tag.DLT_TM_CHAIN: 0x1402 unless tlvs says
    # otherwise), sent on every submit_sm of this gateway.
    dlt_chain_id: DltChain | None = None
    # TLS straight to the SMSC (Jasmin's TLS port, an stunnel in front of an SMSC).
    tls: bool = False
    tls_verify: bool = True  # check the SMSC's certificate and host name
    tls_ca: NonEmpty | None = None  # PEM file of CAs to trust instead of the system's
    # The source address type: by default from the sender (alphanumeric 5/0, a short code of up
    # to 8 digits 3/0, a longer number international 1/1); set both to force one.
    source_addr_ton: int | None = Field(default=None, ge=0, le=6)
    source_addr_npi: int | None = Field(default=None, ge=0, le=18)
    # Send the whole text in one submit_sm's message_payload TLV instead of UDH parts, for SMSCs
    # that segment themselves (one receipt for the whole text).
    message_payload: bool = False
    backup: NonEmpty | None = None

    @field_validator("password")
    @classmethod
    def _password_len(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) > 8:
            # SMPP 3.4 section 5.2.3: password is a C-Octet String of at most 9 octets.
            raise ValueError("SMPP passwords are at most 8 characters (SMPP 3.4 section 5.2.3)")
        return v

    @model_validator(mode="after")
    def _pairs(self) -> SmppConfig:
        if (self.source_addr_ton is None) != (self.source_addr_npi is None):
            raise ValueError("source_addr_ton and source_addr_npi go together: set both or neither")
        if (self.tls_ca or not self.tls_verify) and not self.tls:
            raise ValueError("tls_ca and tls_verify need tls: true")
        tags = {"dlt_entity_id": 0x1400, "dlt_template_id": 0x1401, "dlt_chain_id": 0x1402,
                **self.tlvs}
        if self.dlt_chain_id is None:
            del tags["dlt_chain_id"]
        if len(set(tags.values())) < len(tags):
            shown = ", ".join(f"{k}={v:#06x}" for k, v in sorted(tags.items()))
            raise ValueError(f"tlvs: two DLT values on one TLV tag ({shown}): give each "
                             "its own")
        return self
