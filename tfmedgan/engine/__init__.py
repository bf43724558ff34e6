"""tfmedgan.engine"""
