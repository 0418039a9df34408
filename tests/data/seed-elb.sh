#!/bin/sh
# The seeds' load balancer as one legacy ELB script, for the end-to-end test:
#   an HTTP listener 80 -> 8080, a health check on HTTP:8080/status, two registered instances,
#   an LB-generated cookie stickiness policy, and an HTTPS listener with an uploaded
#   self-signed certificate.
#
# The test supplies what a script cannot carry:
#   seed.crt, seed.key   a self-signed certificate and its key, beside this script
#                        (openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost ...)
#   --instances-file     addresses of the two instances, e.g. 127.0.0.1 and 127.0.0.2, both
#                        serving on BACKEND_PORT
#   --var HTTP_PORT=... --var HTTPS_PORT=... --var BACKEND_PORT=...
#                        free ports on loopback; ELB's own numbers are the defaults.

LB=seed-lb
CERT_NAME=seed-cert

elb-create-lb $LB \
    --listener "protocol=HTTP, lb-port=${HTTP_PORT:-80}, instance-port=${BACKEND_PORT:-8080}" \
    --availability-zones us-east-1a

iam-servercertupload -b seed.crt -k seed.key -s $CERT_NAME
elb-create-lb-listeners $LB \
    --listener "protocol=HTTPS, lb-port=${HTTPS_PORT:-443}, instance-port=${BACKEND_PORT:-8080}, cert-id=arn:aws:iam::123456789012:server-certificate/$CERT_NAME"

# The quickest checks ELB allows, so that a failing instance leaves within seconds.
elb-configure-healthcheck $LB --target "HTTP:${BACKEND_PORT:-8080}/status" \
    --interval 5 --timeout 2 --healthy-threshold 2 --unhealthy-threshold 2

elb-register-instances-with-lb $LB --instances i-0000000000000001,i-0000000000000002

elb-create-lb-cookie-stickiness-policy $LB --policy-name seed-sticky --expiration-period 300
elb-set-lb-policies-of-listener $LB --lb-port ${HTTP_PORT:-80} --policy-names seed-sticky
elb-set-lb-policies-of-listener $LB --lb-port ${HTTPS_PORT:-443} --policy-names seed-sticky
