FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN useradd --create-home --uid 10001 credits
COPY pyproject.toml ./
COPY credits_service ./credits_service
RUN pip install -e .
COPY app.py boot.sh ./
COPY migrations ./migrations
RUN mkdir instance && chown credits instance

USER 10001
EXPOSE 8000
CMD ["./boot.sh"]
