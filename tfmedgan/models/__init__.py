"""tfmedgan.models"""
