# Sourced by scripts/run.sh and scripts/dev-token.sh: the development identity settings of both
# services. Tokens are HS256, signed with the key in .run/dev-jwt.key (generated on first use);
# loopback clients without a token keep an operator's rights.
dev_key="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.run/dev-jwt.key"
for prefix in ORDER_SERVICE PROCESSOR_SERVICE; do
  export "${prefix}__AUTH__ISSUER=order-pipeline-dev"
  export "${prefix}__AUTH__AUDIENCE=order-pipeline"
  export "${prefix}__AUTH__HS256_SECRET_FILE=$dev_key"
  export "${prefix}__AUTH__LOOPBACK_WITHOUT_TOKEN=true"
done
