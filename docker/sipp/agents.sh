#!/bin/bash
# sipp-agents: the five SIPp agent phones (UAS) behind the lab's extensions, on the fixed ports
# of asterisk_conf/pjsip.conf. Mirrors PHONES in agent/lab/sipp.py (a test keeps them equal).
# Exits as soon as one phone dies, so the container's restart policy brings all of them back.
set -euo pipefail

scenarios="${SCENARIOS:-/usr/share/aftercall/sipp}"
asterisk_ip="${SIP_IP:-127.0.0.1}"
hangup_ms="${AGENT_HANGUP_MS:-2000}"   # how long 2003 talks before it hangs up

# extension  SIP port  scenario
PHONES="
2001 5071 uas_answer.xml
2002 5072 uas_answer.xml
2003 5073 uas_hangup.xml
2008 5078 uas_noanswer.xml
2009 5079 uas_busy.xml
"

pids=()
stop() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait || true; }
trap 'stop; exit 0' TERM INT

while read -r ext port scenario; do
    [ -n "$ext" ] || continue
    # Media (RTP echo) ports sit above Asterisk's default RTP range (5000-31000) and 10 apart,
    # since SIPp also opens media port + 2.
    media=$((32000 + (port - 5070) * 10))
    # A fresh token in the To tag and branches this phone makes: in this container SIPp's pid
    # and call numbers are the same on every restart (see uas_answer.xml).
    run="$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
    sipp -sf "$scenarios/$scenario" -i "$asterisk_ip" -p "$port" -mp "$media" \
         -d "$hangup_ms" -nostdin -max_recv_loops 100 -key run "$run" \
         -trace_err -error_file /dev/stderr >/dev/null &
    pids+=("$!")
    echo "sipp-agents: extension $ext on $asterisk_ip:$port ($scenario)"
done <<< "$PHONES"

set +e
wait -n "${pids[@]}"
rc=$?
echo "sipp-agents: a phone exited with status $rc (port in use?); stopping the others" >&2
stop
exit $(( rc == 0 ? 1 : rc ))
