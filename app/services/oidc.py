"""OIDC single sign-on on the API side: a Bearer ID token from a configured issuer (PyJWT + JWKS).

The dashboard logs in with Streamlit's ``st.login`` (``expose_tokens``) and forwards the ID token;
the API verifies its signature against the issuer's JWKS, its issuer, audience and expiry, then maps
it to an enabled local account (roles stay local).
"""

from __future__ import annotations

from dataclasses import dataclass

import jwt

__all__ = ["OidcIdentity", "OidcVerifier", "looks_like_jwt"]


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


@dataclass(frozen=True)
class OidcIdentity:
    subject: str
    username: str | None


class OidcVerifier:
    """Verifies ID tokens of one issuer; JWKS keys are fetched once and cached by PyJWT."""

    def __init__(
        self, *, issuer: str, audience: str, jwks_url: str | None, username_claim: str
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.username_claim = username_claim
        url = jwks_url or issuer.rstrip("/") + "/.well-known/jwks.json"
        self._jwks = jwt.PyJWKClient(url, cache_keys=True, lifespan=3600, timeout=5)

    def verify(self, token: str) -> OidcIdentity | None:
        """The identity in a valid token, or None (bad signature, wrong issuer/audience, expired)."""
        try:
            key = self._jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
                leeway=30,
            )
        except (jwt.PyJWTError, jwt.PyJWKClientError):
            return None
        username = claims.get(self.username_claim)
        return OidcIdentity(
            subject=str(claims["sub"]), username=str(username) if username else None
        )
