"""BGP message codec: pure bytes <-> models, errors carry NOTIFICATION codes and RFC 7606 actions."""
