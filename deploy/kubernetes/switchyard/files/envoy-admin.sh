#!/bin/bash
# Probes and preStop for the gateway's Envoy. Its admin interface stays on
# 127.0.0.1 (its /config_dump holds provider credentials), so kubelet cannot
# reach it; the Envoy image has bash but no curl: HTTP/1.1 over /dev/tcp.
#   envoy-admin.sh ready   exit 0 when Envoy is LIVE, the listener from the
#                          control plane takes connections (LIVE alone also
#                          follows a failed first xDS fetch), and the gateway
#                          is not waiting for its provider credentials (they
#                          come with its first fleet exchange)
#   envoy-admin.sh live    exit 0 when the admin interface answers (liveness)
#   envoy-admin.sh drain   preStop: drain the gateway's listener gracefully
#                          (clients are told to go away, new connections are
#                          still taken for DRAIN_TIME_S while endpoints update),
#                          then wait up to DRAIN_WAIT_S for requests in flight
#                          (long streams). Inbound listeners only: the stats
#                          listener goes on serving Prometheus until Envoy exits
set -u
PORT=${ADMIN_PORT:-9901}
LISTENER=${LISTENER_PORT:-8080}

request() { # METHOD PATH: prints the response
  exec 3<>"/dev/tcp/127.0.0.1/$PORT" || return 1
  printf '%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n' "$1" "$2" >&3
  cat <&3
  exec 3<&-
}

case "${1:-}" in
  ready)
    request GET /ready | head -n 1 | grep -q ' 200 ' || exit 1
    exec 4<>"/dev/tcp/127.0.0.1/$LISTENER" || exit 1
    request GET '/stats?filter=switchyard_credentials_ready' | grep -q 'switchyard_credentials_ready: 1' ;;
  live) request GET /server_info | head -n 1 | grep -q '^HTTP/1.1 ' ;;
  drain)
    request POST '/drain_listeners?graceful&inboundonly' >/dev/null
    sleep "${DRAIN_TIME_S:-15}"
    deadline=$((SECONDS + ${DRAIN_WAIT_S:-120}))
    while [ "$SECONDS" -lt "$deadline" ]; do
      active=$(request GET '/stats?filter=^http\.switchyard\.downstream_rq_active$' |
        sed -n 's/^http\.switchyard\.downstream_rq_active: //p')
      [ "${active:-0}" = 0 ] && exit 0
      sleep 1
    done ;;
  *) echo "usage: envoy-admin.sh ready|live|drain" >&2; exit 2 ;;
esac
