#!/bin/sh
# Installs bubblewrap, the isolation evals/sandbox.py prefers (see its docstring), when it is missing and apt-get
# can install it. Idempotent; never fails the build: without bwrap, the sandbox falls back to `unshare` (root) or
# refuses to run model-written code. Run it or source it: it calls no `exit`.
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then sandbox_sudo=""; else sandbox_sudo="sudo -n"; fi
  if command -v apt-get >/dev/null 2>&1 \
    && $sandbox_sudo apt-get update -qq >/dev/null 2>&1 \
    && $sandbox_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null 2>&1; then
    echo "install-sandbox: installed bubblewrap ($(bwrap --version))"
  else
    echo "install-sandbox: could not install bubblewrap; evals will use a weaker isolation level" >&2
  fi
  unset sandbox_sudo
fi
true
