#!/bin/bash
# sipp-caller: places the lab's demo calls one after another, with the same SIPp arguments as
# caller_args() in agent/lab/sipp.py, and the scenarios of agent/lab/record.py (a test keeps them
# equal). `sipp-caller NAME...` places only those. Exit status: the number of failed calls.
set -uo pipefail

scenarios="${SCENARIOS:-/usr/share/aftercall/sipp}"
asterisk="${ASTERISK:-127.0.0.1:5060}"
local_ip="${SIP_IP:-127.0.0.1}"
media_port="${MEDIA_PORT:-32100}"   # above Asterisk's RTP range; calls run one at a time
caller_name="Ravi Kumar"

# name                    scenario             DID          talk ms  caller          anonymous
CALLS="
answered_caller_hangup    uac_call.xml         18005550300  2000     +919876543210   no
answered_agent_hangup     uac_remote_bye.xml   18005550600  2000     +919876543210   no
no_answer                 uac_reject.xml       18005550800  2000     +919876543210   no
caller_gives_up           uac_cancel.xml       18005550800  1500     +919876543210   no
busy                      uac_reject.xml       18005550400  2000     +919876543210   no
queue_answered            uac_call.xml         18005550100  3000     9876543211      no
queue_sales               uac_call.xml         18005550200  1000     +14155550123    no
queue_abandoned           uac_call.xml         18005550500  2000     +919876543210   no
anonymous                 uac_call.xml         18005550200  1000     +919876543210   yes
appointment               uac_call.xml         18005550700  1500     +919876543210   no
"

wanted=" $* "
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
failed=0
placed=0
while read -r name scenario did talk_ms caller anonymous; do
    [ -n "$name" ] || continue
    if [ $# -gt 0 ] && [[ "$wanted" != *" $name "* ]]; then continue; fi
    if [ "$anonymous" = yes ]; then
        number=anonymous; display=Anonymous; domain=anonymous.invalid; privacy="Privacy: id"
    else
        number="$caller"; display="$caller_name"; domain=127.0.0.1; privacy="X-Aftercall-Lab: 1"
    fi
    # A fresh token in the call's Call-ID, From tag and branches: in this container SIPp's pid
    # is the same on every run, and a repeated branch within 32 s makes Asterisk answer the
    # BYE from the previous call's transaction, leaving this call up (see uac_call.xml).
    run="$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
    # No -p: SIPp binds a free local port of its own.
    sipp "$asterisk" -sf "$scenarios/$scenario" -s "$did" -m 1 -l 1 -i "$local_ip" \
         -mp "$media_port" -d "$talk_ms" \
         -key caller "$number" -key caller_name "$display" -key caller_domain "$domain" \
         -key privacy "$privacy" -key run "$run" -cid_str "%u-%p-$run@%s" \
         -timeout 60s -timeout_error -nostdin \
         -trace_err -error_file /dev/stderr >"$out" 2>&1
    rc=$?
    placed=$((placed + 1))
    if [ "$rc" -ne 0 ]; then
        failed=$((failed + 1))
        # SIPp's own account of the failed call (its screen and errors), for the logs.
        echo "sipp-caller: $name failed (SIPp exit $rc):" >&2
        # Why SIPp gave up (its error lines come before the screen), then the screen itself.
        grep -aiE "abort|unexpected|error|timeout" "$out" | head -n 20 >&2
        tail -n 40 "$out" >&2
    fi
    printf '{"scenario": "%s", "did": "%s", "sipp_rc": %d}\n' "$name" "$did" "$rc"
done <<< "$CALLS"

if [ "$placed" -eq 0 ]; then
    echo "sipp-caller: no scenario named: $*" >&2
    exit 64
fi
exit "$failed"
