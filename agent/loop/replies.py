"""Replies (mobile-originated SMS): link to the message answered, keyword actions, sentiment, ratings.

Keywords are matched on the whole reply, trimmed, case-insensitive, with trailing punctuation
and inner spaces ignored ("stop." and "Stop All" are STOP and STOPALL). rules.yaml's
``replies.keywords`` come first and override the built-in carrier words below, so a contact
centre that uses "CANCEL" for appointments can say so. Opt-outs are written before anything
else is done with the reply: a STOP must hold for the very next call.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

import structlog

from agent.metrics import Metrics
from agent.models import (
    CallRecord,
    Decision,
    InboundSms,
    MessageState,
    RecipientKind,
    SuppressReason,
)
from agent.reports import sentiment_label
from agent.rules.loader import RuleSet
from agent.rules.schema import KeywordAction
from agent.rules.templates import TemplateRenderError, render_call
from agent.sms.encoding import analyze
from agent.sms.numbers import classify, mask
from agent.store.base import MessageRow
from agent.store.seams import ReplyStore

class SubmitNow(Protocol):
    """Dispatcher.submit_now: one text through the policy, sent at once when queued."""

    def __call__(self, d: Decision, *, confirms_opt_out: bool = False) -> Awaitable[MessageRow]:
        ...
#: An acknowledgement later than this is no longer an answer to what the caller sent.
ACK_EXPIRY = timedelta(minutes=30)

log = structlog.get_logger(__name__)

Action = Literal["opt_out", "opt_in", "help", "language", "tag"]

# The words carriers and aggregators treat as opt-out / opt-in / help (CTIA, Twilio's
# defaults). HELP is answered with rules.yaml's ``replies.help`` template.
BUILTIN_KEYWORDS: Mapping[str, Action] = {
    **dict.fromkeys(("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT",
                     "REVOKE"), "opt_out"),
    **dict.fromkeys(("START", "UNSTOP", "YES", "OPTIN"), "opt_in"),
    **dict.fromkeys(("HELP", "INFO"), "help"),
}


def normalise_keyword(text: str) -> str:
    """``"  Stop all! "`` -> ``"STOPALL"``: what keyword lookup compares."""
    t = re.sub(r"[\s.!?,;:]+$", "", text.strip())
    return re.sub(r"[\s_-]+", "", t).upper()


def rating_of(text: str) -> int | None:
    """A lone digit 1-5 (trailing punctuation allowed) is a rating."""
    m = re.fullmatch(r"\s*([1-5])\s*[.!]?\s*", text)
    return int(m.group(1)) if m else None


@dataclass(frozen=True, slots=True)
class ReplyOutcome:
    reply_id: int
    number: str
    message_id: str | None  # the message this replies to (latest sent to the number)
    keyword: str | None
    action: str | None  # opt_out, opt_in, tag:<tag>
    sentiment: float | None  # VADER compound, -1..1
    sentiment_label: str | None
    rating: int | None
    auto_reply: MessageRow | None  # the acknowledgement's log row, when one was sent


class _Vader:
    """vaderSentiment loads its lexicon on construction (~50 ms): do it once, lazily."""

    def __init__(self) -> None:
        self._a: object | None = None

    def __call__(self, text: str) -> float:
        if self._a is None:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

            self._a = SentimentIntensityAnalyzer()
        return float(self._a.polarity_scores(text)["compound"])  # type: ignore[attr-defined]


class ReplyHandler:
    """Handle one inbound SMS (``handle`` is the gateways' ``on_inbound``)."""

    def __init__(
        self,
        store: ReplyStore,
        rules: RuleSet,
        send: SubmitNow,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        metrics: Metrics | None = None,
        sentiment: Callable[[str], float] | None = None,
        languages: dict[str, str] | None = None,
    ) -> None:
        """``languages``: the in-memory number -> language map the record path reads; a
        language keyword updates it with the store."""
        self._languages = languages if languages is not None else {}
        self._store = store
        self._send = send
        self._clock = clock
        self._metrics = metrics
        self._sentiment = sentiment or _Vader()
        self.rules = rules

    @property
    def rules(self) -> RuleSet:
        return self._rules

    @rules.setter
    def rules(self, rules: RuleSet) -> None:
        """A reloaded rules.yaml: its keywords, auto-replies and region from the next reply."""
        keywords: dict[str, KeywordAction] = {
            k: KeywordAction(action=v) for k, v in BUILTIN_KEYWORDS.items()}
        for word, action in rules.config.replies.keywords.items():
            keywords[normalise_keyword(word)] = action
        help_reply = rules.config.replies.help
        for word, action in keywords.items():
            if action.action == "help" and action.reply is None and help_reply is not None:
                keywords[word] = action.model_copy(update={"reply": help_reply})
        self._rules, self._keywords = rules, keywords

    def _number(self, raw: str) -> str:
        info = classify(raw, self._rules.defaults.region)
        if info.e164 is None and raw.isdigit() and len(raw) > 8:
            info = classify("+" + raw, self._rules.defaults.region)  # Kannel drops the "+"
        return info.e164 or raw

    async def handle(self, sms: InboundSms) -> ReplyOutcome:
        number = self._number(sms.sender)
        word = normalise_keyword(sms.text)
        ka = self._keywords.get(word) if word else None
        if ka is not None and ka.action == "opt_out":
            await self._store.opt_out(number, source=f"reply:{sms.gateway}:{word}",
                                      now=self._clock())
        elif ka is not None and ka.action == "language" and ka.language is not None:
            await self._store.set_language(number, ka.language,
                                           source=f"reply:{sms.gateway}:{word}", now=self._clock())
            self._languages[number] = ka.language
        elif ka is not None and ka.action == "opt_in":
            if sms.authenticated:
                await self._store.opt_in(number)
            else:
                # A bearer-URL reply could be anyone's: opting a stranger back in must take a
                # source that proves the sender (signature, SMPP bind, allowed_sources).
                log.warning("opt_in_refused", gateway=sms.gateway, frm=mask(number),
                            why="reply not authenticated (set the gateway's allowed_sources)")
                ka = KeywordAction(action="tag", tag="opt_in_refused")
        original = await self._store.latest_message_to(number)
        sentiment: float | None = None
        rating: int | None = None
        if ka is None:
            rating = rating_of(sms.text) if self._asked_rating(original) else None
            if rating is None and self._rules.config.replies.sentiment and sms.text.strip():
                sentiment = self._sentiment(sms.text)
        action = None if ka is None else (f"tag:{ka.tag}" if ka.action == "tag" else
                                          f"language:{ka.language}" if ka.action == "language"
                                          else ka.action)
        reply_id = await self._store.add_reply(
            sms, message_id=original.id if original else None, keyword=word if ka else None,
            action=action, sentiment=sentiment, rating=rating)
        label = "keyword" if ka else ("rating" if rating else sentiment_label(sentiment) or "none")
        if self._metrics is not None:
            self._metrics.reply(label)
        log.info("reply_received", reply_id=reply_id, gateway=sms.gateway, frm=mask(number),
                 message_id=original.id if original else None, keyword=word if ka else None,
                 action=action, sentiment=label)
        auto = None
        if ka is not None and ka.reply is not None:
            auto = await self._auto_reply(number, word, ka, original)
        return ReplyOutcome(reply_id, number, original.id if original else None,
                            word if ka else None, action, sentiment,
                            sentiment_label(sentiment), rating, auto)

    def _asked_rating(self, original: MessageRow | None) -> bool:
        if original is None:
            return False
        tpl = self._rules.config.templates.get(original.template)
        return bool(tpl and tpl.asks_rating)

    async def _auto_reply(
        self, number: str, word: str, ka: KeywordAction, original: MessageRow | None
    ) -> MessageRow | None:
        """Send ``ka.reply`` back through the original message's gateway, as a message row,
        through the policy like any text: whoever texts in gets no acknowledgement when
        they are opted out, on DND, over a limit, abroad or not a valid number. The STOP
        acknowledgement alone passes the opt-out it confirms. Its idempotency key (call,
        ``reply:<WORD>``, number) means a resent webhook is acknowledged once."""
        assert ka.reply is not None
        template = ka.reply
        d = self._rules.defaults
        record = (await self._store.get_call(original.call_id, pbx=original.pbx)
                  if original else None)
        record = record or CallRecord(call_id=original.call_id if original else "-", caller=number,
                                      pbx=original.pbx if original else "default")
        compiled = self._rules.templates[template]
        tpl = self._rules.config.templates[template]
        now = self._clock()
        try:
            text = render_call(compiled, record, timezone=d.timezone, now=now,
                               link=None, untrusted=d.untrusted_policy(),
                               max_segments=tpl.max_segments)
        except TemplateRenderError as exc:
            log.error("auto_reply_unrendered", template=template, reason=exc.reason)
            return None
        gateway = original.gateway if original else d.gateway
        info = analyze(text)
        valid = classify(number, d.region)
        decision = Decision(
            call_id=record.call_id, rule=f"reply:{word}", trigger=record.trigger,
            recipient=RecipientKind.FIXED, number=valid.e164 if valid.reachable else None,
            template=template, gateway=gateway,
            sender_id=original.sender_id if original else d.sender_id, text=text,
            encoding=info.encoding, segments=info.segments, category=tpl.category,
            dlt_template_id=tpl.dlt_template_id,
            dlt_entity_id=tpl.dlt_entity_id or d.dlt_entity_id,
            # An acknowledgement later than this is no longer an answer to what was sent.
            max_age_seconds=ACK_EXPIRY.total_seconds(), call_ended_at=now,
            suppress=None if valid.reachable else SuppressReason.INVALID_NUMBER, pbx=record.pbx,
            detail=None if valid.reachable else f"reply from {valid.detail or 'an invalid number'}",
        )
        sent = await self._send(decision, confirms_opt_out=ka.action == "opt_out")
        log.info("auto_reply_sent" if sent.state is not MessageState.SUPPRESSED
                 else "auto_reply_suppressed", message_id=sent.id, gateway=gateway,
                 to=mask(number), template=template, state=sent.state.value, reason=sent.reason)
        return sent
