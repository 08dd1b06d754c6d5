# Sourced before building or running on the GPU machine (Ubuntu 24.04, CUDA 13, PyTorch 2.11).
# That machine lacks libzip and has no package registry: scripts/gpu-pack.sh (run here) puts the
# Debian .deb files into .devrun/debs; this unpacks them into /opt/deps (never into /) and points
# pkg-config and the loader there.
if [ -d .devrun/debs ] && [ ! -f /opt/deps/.unpacked ]; then
  mkdir -p /opt/deps
  for f in .devrun/debs/*.deb; do dpkg -x "$f" /opt/deps; done
  touch /opt/deps/.unpacked
fi
export PKG_CONFIG_PATH=/opt/deps/usr/lib/x86_64-linux-gnu/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
export PKG_CONFIG_SYSROOT_DIR=/opt/deps
export LD_LIBRARY_PATH=/opt/deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# OpenSSL (for cpp-httplib) from the same unpacked Debian packages, headers and libraries matching
export OPENSSL_ROOT_DIR=/opt/deps/usr
# libmicrohttpd's pkg-config file names gnutls as a private requirement, and that machine has the
# gnutls library but not its pkg-config file: without one, `rar serve` is not built there. A
# stand-in file is written only where libgnutls.so.30 is present (libmicrohttpd.so loads it itself;
# nothing links against it directly).
pc=/opt/deps/usr/lib/x86_64-linux-gnu/pkgconfig
if [ -d "$pc" ] && ! pkg-config --exists gnutls 2>/dev/null && ls /usr/lib/x86_64-linux-gnu/libgnutls.so.30* >/dev/null 2>&1; then
  printf 'Name: gnutls\nDescription: present as libgnutls.so.30 (stand-in: libmicrohttpd loads it)\nVersion: 3.7.0\nLibs:\nCflags:\n' > "$pc/gnutls.pc"
fi
