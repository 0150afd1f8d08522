# Sourced by scripts/test, scripts/install-test-deps and scripts/lock: makes `uv` (the resolver and
# installer behind the lock) available at the version the lock was made with.
UV_VERSION=0.13.9
if ! command -v uv >/dev/null 2>&1 || [ "$(uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  python3 -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi
export UV_NO_PROGRESS=1
