# Builds the ledgerd binary into a small image. The image carries busybox's
# wget for the compose health check.
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ledgerd ./cmd/ledgerd

FROM alpine:3.22.2
RUN adduser -D -u 10001 ledger && mkdir -m 700 /data && chown ledger /data
COPY --from=build /out/ledgerd /usr/local/bin/ledgerd
USER ledger
WORKDIR /data
ENV LEDGER_HTTP_ADDR=:8080 LEDGER_DATA_DIR=/data
EXPOSE 8080
ENTRYPOINT ["ledgerd"]
CMD ["serve"]
