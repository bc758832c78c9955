#!/usr/bin/env bash
# Creates a private CA and one certificate for the NATS nodes (client TLS and mutually
# authenticated cluster routes) in compose/tls/. Keys never leave this directory; it is
# git-ignored. Production: use your PKI (cert-manager in Kubernetes) with the same file names.
set -euo pipefail
cd "$(dirname "$0")"
days=${DAYS:-825}
[ -f ca.pem ] || openssl req -x509 -newkey rsa:3072 -nodes -keyout ca-key.pem -out ca.pem -days "$days" \
  -subj "/CN=Stellwerk NATS CA"
openssl req -newkey rsa:3072 -nodes -keyout server-key.pem -out server.csr -subj "/CN=nats"
cat > server.ext <<EXT
basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:nats-1,DNS:nats-2,DNS:nats-3,DNS:localhost,IP:127.0.0.1
EXT
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out server.pem -days "$days" \
  -extfile server.ext
rm -f server.csr server.ext ca.srl
chmod 600 ./*-key.pem
echo "compose/tls: ca.pem, server.pem, server-key.pem"
