# RadCheck image for the api and worker services of compose.yaml.
# Volta (V100) needs a PyTorch build with sm_70 kernels (the CUDA 12.6 builds of torch 2.13): pass the
# wheel index of that build as TORCH_INDEX_URL when building for GPU workers.
FROM python:3.11-slim-bookworm

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RADCHECK_STORAGE__DATA_DIR=/data

RUN useradd --create-home --uid 10001 radcheck && mkdir -p /data /models && chown radcheck /data
WORKDIR /opt/radcheck
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY medvlm ./medvlm
COPY dicom_io ./dicom_io
COPY eval ./eval
COPY migrations ./migrations
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install "torch==${TORCH_VERSION}" --index-url "$TORCH_INDEX_URL"; \
    else pip install "torch==${TORCH_VERSION}"; fi \
 && pip install .

USER radcheck
EXPOSE 8000
ENTRYPOINT ["radcheck"]
CMD ["serve", "--host", "0.0.0.0"]
