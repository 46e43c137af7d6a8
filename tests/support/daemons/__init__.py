"""Real routing daemons (FRR, BIRD, GoBGP, ExaBGP) run as appliances/peers inside lab hosts."""
