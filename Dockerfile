# One image for coordinators and workers; the command chooses the role.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[otel]"

FROM python:3.11-slim
RUN useradd --system --uid 10001 niyanta
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER niyanta
WORKDIR /home/niyanta
EXPOSE 8080
ENTRYPOINT ["niyanta"]
CMD ["coordinator", "--listen", "0.0.0.0:8080"]
