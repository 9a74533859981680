"""The School Manager API mdmbot serves (ASM-API.md): API accounts, access tokens, activities."""
