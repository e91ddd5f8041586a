# One image for every role of the cluster recipe (docker-compose.yml): Ray head, GPU worker nodes,
# the ablate driver and the dashboard. Built from this repository, so every node runs the same ablate
# (a trial's provenance records its git commit and version; nodes that differ would mix code).
# The CUDA build of the pinned torch comes from PyTorch's index; set TORCH_INDEX to .../cpu for CPU nodes.
FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends tini && rm -rf /var/lib/apt/lists/*
WORKDIR /ablate
COPY pyproject.toml README.md ./
COPY ablate ./ablate
COPY db ./db
COPY studies ./studies
RUN pip install --extra-index-url "$TORCH_INDEX" -e .
# Ray's token travels as a file mounted at run time, never baked into the image
ENV RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=/run/secrets/ray_token
ENTRYPOINT ["tini", "--"]
CMD ["ablate", "--help"]
