#!/bin/bash
# The official redis image's entrypoint, as far as it goes: a first argument
# that is an option or a .conf file means redis-server; run as root, it
# gives /data to the redis user and drops to it; the umask is 0077.
set -e

if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
  set -- redis-server "$@"
fi

if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
  find . \! -user redis -exec chown redis '{}' +
  exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

um="$(umask)"
if [ "$um" = 0022 ]; then
  umask 0077
fi

exec "$@"
