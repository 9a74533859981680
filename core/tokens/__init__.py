"""The token issuer: server names, certificates, Apple's token file, issuance, MDM servers."""
