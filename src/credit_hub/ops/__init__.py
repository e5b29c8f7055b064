"""Operations endpoints: liveness, readiness, the hub's public key."""
