# A small image running `credit-hub serve`. Build: docker build -t credit-hub .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY src ./src
COPY schemas ./schemas
COPY migrations ./migrations
RUN pip wheel --no-cache-dir --wheel-dir /wheels -c constraints.txt .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 hub
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER hub
WORKDIR /home/hub
ENV CREDIT_HUB_HOST=0.0.0.0 \
    CREDIT_HUB_PORT=8000 \
    CREDIT_HUB_DATABASE_URL=sqlite:////home/hub/data/credit_hub.db \
    CREDIT_HUB_LOG_JSON=true
RUN mkdir -p /home/hub/data
VOLUME ["/home/hub/data"]
EXPOSE 8000
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
ENTRYPOINT ["credit-hub"]
CMD ["serve"]
