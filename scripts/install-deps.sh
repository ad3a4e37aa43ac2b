#!/bin/sh
# Install the Debian 12 packages Tributary builds, tests and demos with.
# Run as root (or through sudo). Safe to run again.
set -e
PACKAGES="
	autoconf automake libtool pkg-config make gcc clang
	dovecot-core dovecot-dev dovecot-imapd dovecot-lmtpd
	dovecot-sieve dovecot-managesieved
	libssl-dev openssl libevent-dev libcurl4-openssl-dev libjson-c-dev
	libcmocka-dev valgrind python3 clang-format ca-certificates
"
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		exec sudo "$0" "$@"
	fi
	echo "install-deps: run as root (apt-get needs it)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Dovecot's package would start the system service; tests run their own.
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
	chmod 755 /usr/sbin/policy-rc.d
	trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
echo "install-deps: packages installed"

# System user and groups. The daemon runs as `tributary` (it reads users and
# accounts from Dovecot's `tributary-userdb` listener, which the drop-in
# conf.d/90-tributary.conf gives to this user); the trace key is
# root:tributary-trace 0640, read by the fetcher (signing) and, through
# `mail_access_groups = tributary-trace`, by Dovecot's LMTP and Sieve
# processes (verifying). useradd/groupadd come with `passwd` (required).
getent group tributary >/dev/null || groupadd --system tributary
getent passwd tributary >/dev/null ||
	useradd --system --gid tributary --home-dir /var/lib/tributary \
		--no-create-home --shell /usr/sbin/nologin \
		--comment "Tributary mail fetcher" tributary
getent group tributary-trace >/dev/null || groupadd --system tributary-trace
case " $(id -nG tributary) " in
*" tributary-trace "*) ;;
*) usermod -a -G tributary-trace tributary ;;
esac
echo "install-deps: user tributary ($(id tributary))"
