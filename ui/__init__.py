"""Shared Streamlit widgets for the pages: session and sign-in, status banners, the card renderer,
navigation. May import streamlit; pipeline/ never imports ui/."""
