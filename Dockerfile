# poolwarden's image: the static (musl) binary and nothing else. No shell, no package manager, no
# CA bundle: TLS trusts the web PKI roots compiled into the binary, or the sslrootcert file a
# database URL names. scripts/image builds the binary and then this image:
#
#   cargo build --release --locked --no-default-features --target x86_64-unknown-linux-musl
#   buildah build --isolation chroot -t poolwarden:0.1.0 .    # or: docker build -t poolwarden:0.1.0 .
FROM scratch

# Where the prebuilt binary is, relative to the build context.
ARG BINARY=target/x86_64-unknown-linux-musl/release/poolwarden
# The crate version (Cargo.toml) and the repository the image was built from.
ARG VERSION=0.1.0
ARG SOURCE=unknown

LABEL org.opencontainers.image.title="poolwarden" \
      org.opencontainers.image.description="Finds and ends leaked PostgreSQL connections, and names the workload that leaked them." \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"

COPY ${BINARY} /poolwarden

# The "nonroot" user of distroless images; the Helm chart runs the pod as the same user.
USER 65532:65532
EXPOSE 8080

ENTRYPOINT ["/poolwarden"]
CMD ["controller"]
