"""mdmbot domain: MDM servers, certificates, server tokens and their lifecycle."""
