"""tfmedgan.networks"""
